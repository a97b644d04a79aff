// A recording's waveform on a <canvas>, and a region drawn on it with the pointer (the repaint / lego window).

// min and max of each of `width` columns of `samples` (a Float32Array of one channel).
export function peaks(samples, width) {
  const out = [];
  const per = samples.length / width;
  for (let x = 0; x < width; x++) {
    const from = Math.floor(x * per);
    const to = Math.max(from + 1, Math.floor((x + 1) * per));
    let min = 0;
    let max = 0;
    for (let i = from; i < to && i < samples.length; i++) {
      if (samples[i] < min) min = samples[i];
      if (samples[i] > max) max = samples[i];
    }
    out.push([min, max]);
  }
  return out;
}

const round = (seconds) => Math.round(seconds * 100) / 100;

// The region in seconds between two pointer positions (pixels from the left), in either order, inside the song.
export function regionOf(x0, x1, width, duration) {
  const at = (x) => round((Math.min(Math.max(x, 0), width) / width) * duration);
  const [a, b] = [at(x0), at(x1)].sort((p, q) => p - q);
  return { start: a, end: b };
}

export class Waveform {
  // onRegion({start, end}) is called when a drag ends.
  constructor(canvas, onRegion) {
    this.canvas = canvas;
    this.onRegion = onRegion;
    this.columns = [];
    this.duration = 0;
    this.region = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  // audio: an AudioBuffer (its first channel is drawn).
  show(audio) {
    this.audio = audio;
    this.duration = audio ? audio.duration : 0;
    this.region = null;
    this.draw();
  }

  setRegion(region) {
    this.region = region;
    this.draw();
  }

  x(e) {
    return e.clientX - this.canvas.getBoundingClientRect().left;
  }

  down(e) {
    if (!this.duration) return;
    this.canvas.setPointerCapture(e.pointerId);
    this.from = this.x(e);
    this.setRegion(regionOf(this.from, this.from, this.canvas.clientWidth, this.duration));
  }

  move(e) {
    if (this.from === undefined) return;
    this.setRegion(regionOf(this.from, this.x(e), this.canvas.clientWidth, this.duration));
  }

  up(e) {
    if (this.from === undefined) return;
    const region = regionOf(this.from, this.x(e), this.canvas.clientWidth, this.duration);
    this.from = undefined;
    this.setRegion(region);
    if (region.end > region.start) this.onRegion(region);
  }

  draw() {
    const canvas = this.canvas;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    const scale = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    const g = canvas.getContext("2d");
    g.scale(scale, scale);
    const style = getComputedStyle(canvas);
    g.clearRect(0, 0, width, height);
    if (this.region && this.duration) {
      const x0 = (this.region.start / this.duration) * width;
      const x1 = (this.region.end / this.duration) * width;
      g.fillStyle = style.getPropertyValue("--region").trim() || "rgba(255, 170, 0, 0.3)";
      g.fillRect(x0, 0, Math.max(x1 - x0, 1), height);
    }
    if (!this.audio) return;
    if (this.columns.length !== width || this.drawnFor !== this.audio) {
      this.columns = peaks(this.audio.getChannelData(0), width);
      this.drawnFor = this.audio;
    }
    g.fillStyle = style.getPropertyValue("--wave").trim() || "#4a7";
    const mid = height / 2;
    this.columns.forEach(([min, max], x) => {
      g.fillRect(x, mid - max * mid, 1, Math.max((max - min) * mid, 1));
    });
  }
}

let context = null;

// A blob's audio, decoded at `rate` (the server's: no resampling), or null when the browser cannot (the page then
// shows the player alone).
export async function decode(blob, rate) {
  try {
    context = context || new AudioContext({ sampleRate: rate });
    return await context.decodeAudioData(await blob.arrayBuffer());
  } catch {
    return null;
  }
}
