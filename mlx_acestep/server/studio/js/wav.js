// A decoded song as a 16-bit PCM WAV file (the "WAV" download beside the format the server rendered): pure.

// channels: one Float32Array per channel, all of one length; returns the file's bytes.
export function encodeWav(channels, sampleRate) {
  const frames = channels[0].length;
  const count = channels.length;
  const data = frames * count * 2;
  const view = new DataView(new ArrayBuffer(44 + data));
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + data, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // the fmt chunk's size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, count, true);
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * count * 2, true); // bytes a second
  view.setUint16(32, count * 2, true); // bytes a frame
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, data, true);
  let at = 44;
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < count; c++) {
      const v = Math.max(-1, Math.min(1, channels[c][i]));
      view.setInt16(at, v < 0 ? Math.round(v * 0x8000) : Math.round(v * 0x7fff), true);
      at += 2;
    }
  }
  return view.buffer;
}

export function wavBlob(audio) {
  const channels = Array.from({ length: audio.numberOfChannels }, (_, c) => audio.getChannelData(c));
  return new Blob([encodeWav(channels, audio.sampleRate)], { type: "audio/wav" });
}
