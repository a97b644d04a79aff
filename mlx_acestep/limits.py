"""The numbers every entry point shares: audio rates, the ranges a request may take, token caps, defaults.

Each lives here once; the request, the CLI's help, the planner's constraint and the
pipeline import it from here.
"""

SAMPLE_RATE = 48000  # Hz, stereo
HOP = 1920  # audio samples per latent frame (25 latent frames per second)

# A rendered song or clip. Upstream renders any positive length (its silent target is at least 0.1 s:
# task_utils.py:117-122 `create_target_wavs`), the DiT at least MIN_FRAMES; the output keeps the length asked for.
SECONDS = (0.1, 600.0)
# What the planner may choose (upstream's DURATION_MIN / DURATION_MAX, constants.py:58-59, which bound only its
# constrained duration decoding).
PLANNER_SECONDS = (10, 600)
DEFAULT_SECONDS = 30.0  # text2music without the planner and without a duration
SOURCE_SECONDS = (1.0, 600.0)  # a source or reference recording of the editing tasks
MIN_FRAMES = 128  # the reference pads every target to at least 128 latent frames (spec 5.2)
MAX_BATCH = 8
BPM = (30, 300)
SEED_MAX = 2**63 - 1

STEPS = (1, 200)  # diffusion steps (base / SFT)
# turbo's steps: upstream's service clamps them to 8 (service_generate_request.py:52-57) before generate_audio's
# own cap of 20, so 8 is the most an upstream user gets
TURBO_STEP_RANGE = (1, 8)
SHIFT = (0.0, 10.0)  # timestep shift, in (lo, hi]
GUIDANCE = (0.0, 30.0)  # CFG scale
LM_CFG_SCALE = (0.0, 30.0)  # the planner's, in (lo, hi]
LM_TEMPERATURE = (0.0, 10.0)  # 0 = greedy
LM_TOP_P = (0.0, 1.0)  # in (lo, hi]
# The planner's sampling defaults, as the reference runs it (spec 8.5).
DEFAULT_LM_CFG_SCALE, DEFAULT_LM_TEMPERATURE, DEFAULT_LM_TOP_P = 2.0, 0.85, 0.9

# DCW, upstream's wavelet correction: its defaults (upstream's grid-search optimum) and the scalers' range (the
# reference's UI offers 0-0.1; more is allowed, up to 1).
DEFAULT_DCW_MODE, DEFAULT_DCW_SCALER, DEFAULT_DCW_HIGH_SCALER, DEFAULT_DCW_WAVELET = "double", 0.05, 0.02, "haar"
DCW_SCALER = (0.0, 1.0)
# Upstream's velocity stabilisers: the norm clamp's k (||v|| <= k ||x||; 0 = off) and the EMA factor (0 = off).
VELOCITY_NORM_THRESHOLD = (0.0, 10.0)
VELOCITY_EMA_FACTOR = (0.0, 0.99)
# Flow-edit: its window's ends, shares of the schedule's steps, and the forward-noise draws a step (upstream's UI
# offers 1-8; each draw costs two DiT passes).
FLOW_EDIT_WINDOW = (0.0, 1.0)
FLOW_EDIT_N_AVG = (1, 8)

# Repaint / lego's explicit cross-fades (upstream's repaint_latent_crossfade_frames, repaint_wav_crossfade_sec): none
# to the longest song. Upstream takes any number and clips the ramps at the song's ends, as these do.
REPAINT_CROSSFADE_FRAMES = (0, 15000)
REPAINT_CROSSFADE_SECONDS = (0.0, 600.0)

# The VAE's overlap-discard windows, in latent frames (256 = 10.24 s; see models/vae/oobleck.py for the overlap).
# VAE_CHUNK is the window off Metal; on Metal it follows the unified memory as upstream sizes its MLX decode
# (gpu_config.py:779-810 `_auto_mlx_vae_chunk_size`): (at most this many GB, window in frames), the last for more.
VAE_CHUNK, VAE_OVERLAP = 256, 16
VAE_WINDOW_BY_MEMORY = ((16, 256), (36, 512), (64, 1024), (None, 2048))
VAE_WINDOW = (64, 8192)  # what --vae-window accepts: a core left beside the overlap, at most ~5.5 minutes
VAE_CLEAR_EVERY = 4  # windows between cache clears on a long song (mlx_vae_decode_native.py:121-122)

# What the converter offers (quantization names map to bits in quantization.py).
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE_CHOICES = ("none", "q8", "q4")
GROUP_SIZES = (32, 64, 128)

# Token caps. The DiT's caption prompt and lyric prompt are truncated to these (with a warning), as the
# reference's text encoder does; the planner may write at most PLANNER_CAPTION_TOKENS of caption in its
# <think> block (the reference's limit on generated text, a different thing from the prompt cap).
CAPTION_TOKENS = 256
LYRIC_TOKENS = 2048
PLANNER_CAPTION_TOKENS = 512
# Text is cut to this many characters per allowed token before it is tokenized at all: a 10 MB lyrics file would
# otherwise take minutes to tokenize (and the planner's prompt would not fit in memory). No token is this long.
CHARS_PER_TOKEN = 64
# A caption or lyrics file (or stdin) is read up to what that cut could ever keep (4 bytes: UTF-8's widest
# character): /dev/zero or a log file given by mistake is read in bounded time, and the cut above warns.
TEXT_FILE_BYTES = max(CAPTION_TOKENS, LYRIC_TOKENS) * CHARS_PER_TOKEN * 4


def seconds_of(frames: int) -> float:
    return frames * HOP / SAMPLE_RATE


def frames_of(seconds: float) -> int:
    """Latent frames of a duration: rounded to 0.1 s, `int(d * 48000) // 1920` (spec 5.2)."""
    return int(round(seconds, 1) * SAMPLE_RATE) // HOP


# Adapters. A user's scale beyond 10 (upstream's server allows 0-1) only drives the DiT into overflow; a factor or
# the file's own alpha / r beyond 1e4 is a damaged or hostile file (trained LoRA factors are of order 0.01-1), whose
# product would overflow half precision and stop the run only after its diffusion, misnamed as "overflow".
ADAPTER_SCALE = (0.0, 10.0)
ADAPTER_VALUE_MAX = 1e4
