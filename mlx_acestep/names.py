"""Names the project shares with the reference: the official checkpoint's folders, tasks, tracks, prompt defaults.

Light on purpose (no imports): the command line reads them before anything heavy loads.
"""

DEFAULT_REPO = "ACE-Step/Ace-Step1.5"
VAE_DIR = "vae"
TEXT_ENCODER = "Qwen3-Embedding-0.6B"
DIT_PREFIX = "acestep-v15-"
DEFAULT_DIT = "acestep-v15-turbo"
BASE_DIT = "acestep-v15-base"
SFT_DIT = "acestep-v15-sft"
DIT_SHORT = {"turbo": DEFAULT_DIT, "base": BASE_DIT, "sft": SFT_DIT}  # what --dit also takes: the variant's name
LM_PREFIX = "acestep-5Hz-lm-"
LM_SIZES = ("0.6B", "1.7B", "4B")
DEFAULT_LM = "1.7B"  # the reference's default planner, the one inside the main repo

# The audio files we write (audio.py): MP3 and Opus where the installed libsndfile encodes them, refused by name where
# it does not. Upstream's REST also names aac (through ffmpeg), which libsndfile cannot write.
AUDIO_FORMATS = ("wav", "flac", "mp3", "opus")

TASKS = ("text2music", "cover", "cover-nofsq", "repaint", "extract", "lego", "complete")
# cover-nofsq (upstream's "Remix" without FSQ): cover's instruction, the source's raw latents as the context
COVER_TASKS = ("cover", "cover-nofsq")
BASE_ONLY = ("extract", "lego", "complete")
REGION_TASKS = (
    "repaint",
    "lego",
)  # the tasks with a region of the source (repaint_start / repaint_end)  # trained into the base model only
TRACKS = (
    "woodwinds",
    "brass",
    "fx",
    "synth",
    "strings",
    "percussion",
    "keyboard",
    "guitar",
    "bass",
    "drums",
    "backing_vocals",
    "vocals",
)
REPAINT_MODES = ("balanced", "conservative", "aggressive")
# repaint / lego's chunk mask (upstream's chunk_mask_mode, default auto since March 2026): explicit marks the
# region 1 and the rest 0; auto leaves the whole item at 1 and lets the model find the region
CHUNK_MASK_MODES = ("auto", "explicit")
SAMPLING_METHODS = ("ode", "sde")  # the diffusion step: deterministic, or re-noised each step
SOLVERS = ("euler", "heun")  # the ODE's integrator: one DiT evaluation a step, or two (upstream's sampler_mode)
GUIDANCE_KINDS = ("apg", "adg", "cfg")  # base / SFT guidance against the null condition
DCW_MODES = ("low", "high", "double", "pix")  # the wavelet correction's bands (diffusion/dcw.py)
DCW_WAVELETS = ("haar", "db2", "db4", "sym4", "sym8", "coif2")  # upstream's UI's choices, all native (wavelets.py)
FLOW_EDIT_TASKS = ("text2music", "cover", "cover-nofsq")  # where upstream's flow-edit overlay runs

# The reference's value lists for the metadata (its constrained decoder allows exactly these, spec 8.4).
KEY_NOTES, KEY_ACCIDENTALS, KEY_MODES = "ABCDEFG", ("", "#", "b", "♯", "♭"), ("major", "minor")
KEYSCALES = tuple(f"{note}{acc} {mode}" for note in KEY_NOTES for acc in KEY_ACCIDENTALS for mode in KEY_MODES)
TIME_SIGNATURES = ("2", "3", "4", "6")  # beats per bar: 2/4, 3/4, 4/4, 6/8

INSTRUMENTAL = "[Instrumental]"  # the lyrics of a song without vocals
# What upstream writes where the user wrote nothing: the planner's unconditional caption when no negative prompt is
# given, and the query, caption or codes of its text tasks when they are empty.
NO_USER_INPUT = "NO USER INPUT"
NEGATIVE_DEFAULT = NO_USER_INPUT
# The planner's codes-phase prompt (planner/lm.py): current is upstream's since April 2026 (PRs #1127/#1128);
# legacy-uncond its A/B toggle (use_legacy_cfg_prompt); february the form of 1e6e3d18, which 0.4's runs used.
LM_CODES_PROMPTS = ("current", "legacy-uncond", "february")

CONVERSION_FILE = "conversion.json"  # marks a finished converted folder (the converter writes it last)
