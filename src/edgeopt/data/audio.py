"""WAV folders: ``audio:DIR`` -> fixed-length log-mel (or MFCC) features computed with numpy.

The front end is plain numpy (Hann window, real FFT, triangular HTK mel filters, log, DCT-II),
steps a microcontroller's DSP library also provides, so :func:`log_mel` can be reused as a
device's preprocessing, and its cost, recorded in ``Dataset.frontend["frontend_ops"]``, can be
added to the model's when a latency or energy budget is checked.
"""

from __future__ import annotations

import re
import struct
import wave
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

from edgeopt.data.dataset import Dataset
from edgeopt.data.dataset import make_dataset
from edgeopt.errors import InputError
from edgeopt.registry import register_dataset
from edgeopt.spec import Spec

#: Lowest mel filter edge: below ~20 Hz there is no speech, only DC offset and rumble.
FMIN_HZ = 20.0
#: Added before the log so silent (zero-padded) frames stay finite.
LOG_OFFSET = 1e-6
#: 16-bit PCM full scale: :func:`read_wav` divides int16 samples by it (so -32768 maps to -1).
PCM16_FULL_SCALE = 32768.0
#: Clips transformed per batch: bounds the memory of the complex spectra (~13 MB per 100 clips).
_CHUNK_CLIPS = 256
#: Free Spoken Digit Dataset names: ``<label>_<speaker>_<take>.wav``.
_FSDD_NAME = re.compile(r"^[^_]+_.+_(\d+)$")


@dataclass(frozen=True)
class _Framing:
    """Sample counts of the front end at one sample rate."""

    samples: int
    frame_length: int
    hop_length: int
    n_fft: int
    frames: int


def _framing(
    *, sample_rate: int, seconds: float, frame_ms: float, hop_ms: float, where: str
) -> _Framing:
    """Turn the durations into sample counts, refusing settings that leave no whole frame."""
    if sample_rate <= 0:
        raise InputError(f"{where}: sample rate {sample_rate} Hz must be positive.")
    if seconds <= 0 or frame_ms <= 0 or hop_ms <= 0:
        raise InputError(f"{where}: seconds, frame_ms and hop_ms must all be positive.")
    samples = round(seconds * sample_rate)
    frame_length = round(frame_ms * sample_rate / 1000)
    hop_length = round(hop_ms * sample_rate / 1000)
    if frame_length < 2 or hop_length < 1:
        raise InputError(f"{where}: frame_ms={frame_ms} is shorter than two samples.")
    if frame_length > samples:
        raise InputError(f"{where}: frame_ms={frame_ms} is longer than seconds={seconds}.")
    n_fft = 1 << (frame_length - 1).bit_length()
    frames = 1 + (samples - frame_length) // hop_length
    return _Framing(samples, frame_length, hop_length, n_fft, frames)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, ``2595 log10(1 + f / 700)`` (Young et al., The HTK Book, sec. 5.4)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, mels: int) -> np.ndarray:
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN_HZ), hz_to_mel(sample_rate / 2), mels + 2))
    bin_hz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    # Triangles interpolated at each bin's exact frequency (not snapped to bins, as HTK does), so
    # narrow low-frequency filters still catch the bins near them.
    rising = (bin_hz - lower) / (center - lower)
    falling = (upper - bin_hz) / (upper - center)
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    empty = np.flatnonzero(~bank.any(axis=1))
    if len(empty):
        raise InputError(
            f"mels={mels} is too many for a {n_fft}-point FFT at {sample_rate} Hz (filter "
            f"{empty[0]} covers no FFT bin); use fewer mels or a longer frame_ms."
        )
    bank.flags.writeable = False
    return bank


def mel_filterbank(*, sample_rate: int, n_fft: int, mels: int) -> np.ndarray:
    """Build the triangular HTK mel filters from 20 Hz to half the sample rate.

    A device front end needs the very same matrix, so it is public rather than rebuilt there.

    Args:
        sample_rate: Sample rate of the signal in Hz.
        n_fft: FFT size; the filters act on its ``n_fft // 2 + 1`` power bins.
        mels: Number of filters.

    Returns:
        Read-only float32 matrix shaped (mels, n_fft // 2 + 1), peak 1 per filter.

    Raises:
        InputError: a filter would fall between two FFT bins and cover none.

    Example:
        >>> mel_filterbank(sample_rate=8000, n_fft=512, mels=40).shape
        (40, 257)
    """
    return _filterbank(int(sample_rate), int(n_fft), int(mels))


def dct_matrix(size: int, keep: int) -> np.ndarray:
    """Build the first ``keep`` rows of the orthonormal DCT-II of length ``size``.

    Public for the same reason as :func:`mel_filterbank`: a front end built elsewhere (the ONNX
    one of ``edgeopt.export.frontend``) must use this very matrix.

    Args:
        size: Input length (the number of mel filters).
        keep: Rows (cepstral coefficients) kept.

    Returns:
        float64 matrix shaped (keep, size), scipy's ``dct(norm="ortho")`` rows.

    Example:
        >>> basis = dct_matrix(40, 40)
        >>> bool(np.allclose(basis @ basis.T, np.eye(40)))
        True
    """
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    basis: np.ndarray = np.sqrt(2.0 / size) * np.cos(np.pi * k * (2 * n + 1) / (2 * size))
    basis[0] /= np.sqrt(2.0)
    return basis


def hann_window(frame_length: int) -> np.ndarray:
    """Build the periodic Hann window :func:`log_mel` multiplies every frame by.

    Periodic, the FFT-analysis form (TensorFlow's ``hann_window`` default, used by KWS models).

    Args:
        frame_length: Window length in samples.

    Returns:
        float32 window of ``frame_length`` samples.

    Example:
        >>> hann_window(4).tolist()
        [0.0, 0.5, 1.0, 0.5]
    """
    n = np.arange(frame_length)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / frame_length)).astype(np.float32)


def _fit_length(signal: np.ndarray, samples: int) -> np.ndarray:
    """Centre-crop or zero-pad the last axis to ``samples``: keeps the middle of a long clip."""
    length = signal.shape[-1]
    if length > samples:
        start = (length - samples) // 2
        return signal[..., start : start + samples]
    if length < samples:
        pad = [(0, 0)] * (signal.ndim - 1) + [(0, samples - length)]
        return np.pad(signal, pad)
    return signal


def log_mel(
    signal: np.ndarray,
    *,
    sample_rate: int,
    seconds: float = 1.0,
    frame_ms: float = 40.0,
    hop_ms: float = 20.0,
    mels: int = 40,
    mfcc: int = 0,
) -> np.ndarray:
    """Compute fixed-length log-mel features (or MFCCs) of one clip or a batch of clips.

    The clip is centre-cropped or zero-padded to ``seconds``, cut into Hann-windowed frames of
    ``frame_ms`` every ``hop_ms``, transformed with a real FFT of the next power of two, and its
    power summed by ``mels`` HTK mel filters; ``log(mel + 1e-6)`` follows. With ``mfcc=K`` an
    orthonormal DCT-II keeps the first K cepstral coefficients (the 49x10 input of the "Hello
    Edge" keyword-spotting models, https://arxiv.org/abs/1711.07128).

    Args:
        signal: Samples in [-1, 1], shaped (samples,) or (clips, samples).
        sample_rate: Sample rate of ``signal`` in Hz.
        seconds: Clip length the features describe.
        frame_ms: Frame (window) length in milliseconds.
        hop_ms: Step between frame starts in milliseconds.
        mels: Number of mel filters.
        mfcc: Number of cepstral coefficients kept; 0 returns the log-mel energies.

    Returns:
        float32 features shaped (frames, mels or mfcc), with a leading clip axis for a batch.

    Raises:
        InputError: the settings leave no whole frame, too many mels for the FFT, or
            ``mfcc`` above ``mels``.

    Example:
        >>> tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
        >>> log_mel(tone, sample_rate=8000).shape
        (49, 40)
        >>> log_mel(tone, sample_rate=8000, mfcc=10).shape
        (49, 10)
    """
    framing = _framing(
        sample_rate=sample_rate,
        seconds=seconds,
        frame_ms=frame_ms,
        hop_ms=hop_ms,
        where="log_mel",
    )
    if mels < 1 or not 0 <= mfcc <= mels:
        raise InputError(f"log_mel: need mels >= 1 and 0 <= mfcc <= mels (got {mels}, {mfcc}).")
    batch = np.asarray(signal, dtype=np.float32)
    if batch.ndim not in (1, 2):
        raise InputError(f"log_mel: signal has shape {batch.shape}; expected 1 or 2 dims.")
    batch = _fit_length(np.atleast_2d(batch), framing.samples)
    window = hann_window(framing.frame_length)
    bank_t = mel_filterbank(sample_rate=sample_rate, n_fft=framing.n_fft, mels=mels).T
    dct_t = dct_matrix(mels, mfcc).T.astype(np.float32) if mfcc else None
    out = np.empty((len(batch), framing.frames, mfcc or mels), dtype=np.float32)
    for start in range(0, len(batch), _CHUNK_CLIPS):
        chunk = batch[start : start + _CHUNK_CLIPS]
        frames = np.lib.stride_tricks.sliding_window_view(chunk, framing.frame_length, axis=-1)
        frames = frames[:, :: framing.hop_length][:, : framing.frames] * window
        spectrum = np.fft.rfft(frames, n=framing.n_fft, axis=-1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        features = np.log(power @ bank_t + LOG_OFFSET)
        out[start : start + len(chunk)] = features @ dct_t if dct_t is not None else features
    return out if np.ndim(signal) == 2 else out[0]


def _to_pcm16(batch: np.ndarray) -> np.ndarray:
    """The int16 samples a device would feed: exact for mono 16-bit WAVs at their own rate
    (FSDD), rounded to the nearest 16-bit step for other widths, channel means or resampling."""
    scaled = np.round(np.asarray(batch, dtype=np.float64) * PCM16_FULL_SCALE)
    return np.clip(scaled, -PCM16_FULL_SCALE, PCM16_FULL_SCALE - 1).astype(np.int16)


def describe_frontend(
    *,
    sample_rate: int,
    seconds: float = 1.0,
    frame_ms: float = 40.0,
    hop_ms: float = 20.0,
    mels: int = 40,
    mfcc: int = 0,
) -> dict[str, object]:
    """Describe the front end an ``audio:`` spec with these parameters records.

    The record (``Dataset.frontend``) is what a device, or the ONNX front end of
    ``edgeopt.export.frontend``, rebuilds :func:`log_mel` from; this gives it without WAV files.

    Args:
        sample_rate: Sample rate of the clips in Hz.
        seconds: Clip length the features describe.
        frame_ms: Frame (window) length in milliseconds.
        hop_ms: Step between frame starts in milliseconds.
        mels: Number of mel filters.
        mfcc: Number of cepstral coefficients kept; 0 for log-mel energies.

    Returns:
        The record: parameters in samples, the int16 input it takes, and per-clip op counts.

    Raises:
        InputError: the settings leave no whole frame, or ``mfcc`` is above ``mels``.

    Example:
        >>> record = describe_frontend(sample_rate=8000, mfcc=10)
        >>> record["samples"], record["frame_length"], record["hop_length"], record["n_fft"]
        (8000, 320, 160, 512)
    """
    if mels < 1 or not 0 <= mfcc <= mels:
        raise InputError(f"need mels >= 1 and 0 <= mfcc <= mels (got {mels}, {mfcc}).")
    framing = _framing(
        sample_rate=sample_rate,
        seconds=seconds,
        frame_ms=frame_ms,
        hop_ms=hop_ms,
        where="describe_frontend",
    )
    bank = mel_filterbank(sample_rate=sample_rate, n_fft=framing.n_fft, mels=mels)
    frames = framing.frames
    return {
        "features": "mfcc" if mfcc else "log-mel",
        "sample_rate": sample_rate,
        "seconds": seconds,
        # What a device feeds: ``samples`` int16 values (the clip already centre-cropped or
        # zero-padded), read as int16 / pcm_full_scale; the ONNX front end takes exactly this.
        "samples": framing.samples,
        "pcm_dtype": "int16",
        "pcm_full_scale": PCM16_FULL_SCALE,
        "frame_ms": frame_ms,
        "hop_ms": hop_ms,
        "frame_length": framing.frame_length,
        "hop_length": framing.hop_length,
        "n_fft": framing.n_fft,
        "mels": mels,
        "mfcc": mfcc,
        "window": "hann (periodic)",
        "mel_scale": "htk",
        "fmin_hz": FMIN_HZ,
        "fmax_hz": sample_rate / 2,
        "log_offset": LOG_OFFSET,
        "frontend_ops": {
            "frames": frames,
            "fft_size": framing.n_fft,
            "ffts": frames,
            "window_macs": frames * framing.frame_length,
            "power_macs": frames * 2 * (framing.n_fft // 2 + 1),
            # Only the nonzero taps: a device stores each filter as (first bin, weights).
            "mel_macs": frames * int(np.count_nonzero(bank)),
            "logs": frames * mels,
            "dct_macs": frames * mels * mfcc,
        },
    }


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV (8/16/24/32-bit, any channel count) as mono float32 in [-1, 1].

    Args:
        path: The WAV file.

    Returns:
        (samples, sample rate in Hz); channels are averaged to mono.

    Raises:
        InputError: the file is not a PCM WAV the stdlib ``wave`` module can parse, or holds no
            samples.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "silence.wav"
        >>> with wave.open(str(path), "wb") as handle:
        ...     handle.setnchannels(1); handle.setsampwidth(2); handle.setframerate(8000)
        ...     handle.writeframes(bytes(800))
        >>> samples, rate = read_wav(path)
        >>> samples.shape, rate
        ((400,), 8000)
    """
    try:
        with wave.open(str(path), "rb") as handle:
            rate = handle.getframerate()
            width = handle.getsampwidth()
            channels = handle.getnchannels()
            blob = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError, OSError, struct.error, ValueError, RuntimeError) as exc:
        # (the standard library's chunk reader raises a bare RuntimeError on a bad chunk size)
        detail = str(exc) or type(exc).__name__
        raise InputError(f"{path}: cannot be parsed as a PCM WAV file ({detail}).") from None
    if width not in (1, 2, 3, 4) or channels < 1 or rate <= 0:
        raise InputError(
            f"{path}: unsupported WAV ({8 * width}-bit, {channels} channels, {rate} Hz)."
        )
    usable = len(blob) - len(blob) % (width * channels)  # a truncated last frame is dropped
    if usable == 0:
        raise InputError(f"{path}: the WAV file holds no audio samples.")
    raw = np.frombuffer(blob, dtype=np.uint8, count=usable)
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        samples = (raw.astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit: place the 3 bytes high in an int32, then shift to sign-extend
        padded = np.zeros((usable // 3, 4), dtype=np.uint8)
        padded[:, 1:] = raw.reshape(-1, 3)
        samples = (padded.view("<i4")[:, 0] >> 8).astype(np.float32) / float(1 << 23)
    else:
        dtype = "<i2" if width == 2 else "<i4"
        scale = float(1 << (8 * width - 1))
        samples = np.frombuffer(raw.tobytes(), dtype=dtype).astype(np.float32) / scale
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32), rate


def _wav_files(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".wav"),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def _labels(folder: Path, files: list[Path], where: str) -> list[str]:
    """Class sub-folder names when the WAVs sit in sub-folders, else file-name prefixes."""
    nested = [path.parent != folder for path in files]
    if all(nested):
        labels = [path.relative_to(folder).parts[0] for path in files]
        if len(set(labels)) == 1:
            raise InputError(
                f"{where}: every WAV sits in the one sub-folder {labels[0]!r}; point the spec at "
                f"{folder / labels[0]} or use one sub-folder per class."
            )
        return labels
    if any(nested):
        raise InputError(
            f"{where}: labels cannot be derived because {folder} mixes WAVs in class sub-folders "
            "with WAVs at its top level."
        )
    labels = []
    for path in files:
        prefix, sep, _ = path.stem.partition("_")
        if not sep or not prefix:
            raise InputError(
                f"{where}: cannot derive a label from {path.name}; name files "
                "<label>_<rest>.wav or put them in one sub-folder per class."
            )
        labels.append(prefix)
    return labels


def _class_order(labels: list[str]) -> tuple[str, ...]:
    """Sorted class names; numerically when all are integers, so "10" follows "9"."""
    names = set(labels)
    if all(name.isdigit() for name in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def _read_clips(
    files: list[Path], *, rate: int, where: str
) -> tuple[list[np.ndarray], int, list[str]]:
    """Read every WAV at one sample rate: ``rate`` resamples to it, 0 takes the first file's."""
    clips: list[np.ndarray] = []
    resampled: Counter[int] = Counter()
    target = rate
    for path in files:
        samples, file_rate = read_wav(path)
        if target == 0:
            target = file_rate
        if file_rate != target:
            if rate == 0:
                raise InputError(
                    f"{path}: sample rate {file_rate} Hz differs from the {target} Hz of "
                    f"{files[0].name}; add ?rate=N to resample every file to N Hz."
                )
            from scipy.signal import resample_poly

            common = gcd(target, file_rate)
            samples = resample_poly(samples, target // common, file_rate // common)
            samples = samples.astype(np.float32)
            resampled[file_rate] += 1
        clips.append(samples)
    notes = []
    if resampled:
        sources = ", ".join(f"{count} from {hz} Hz" for hz, count in sorted(resampled.items()))
        notes.append(
            f"resampled {sum(resampled.values())} of {len(files)} files to {target} Hz ({sources})"
        )
    return clips, target, notes


@register_dataset("audio")
def load_audio(spec: Spec) -> Dataset:
    """WAV folder -> log-mel features shaped (1, frames, mels) (or (1, frames, mfcc)).

    Labels come from class sub-folders, or else from the file-name prefix before the first
    ``_``. When every name follows the Free Spoken Digit Dataset's ``<label>_<speaker>_<take>``,
    takes 0-4 are the test split (its README's rule; ``?test_takes=N`` moves the cutoff);
    otherwise 20% of each class is held out. Parameters: ``rate`` (resample to N Hz; default:
    the first file's rate, and other rates are refused), ``seconds``, ``frame_ms``, ``hop_ms``,
    ``mels`` and ``mfcc`` (see :func:`log_mel`).

    Raises:
        InputError: DIR is missing or has no WAV, a WAV cannot be parsed, labels cannot be
            derived, sample rates differ without ``rate``, or a parameter is malformed.
    """
    spec.check_keys({"rate", "seconds", "frame_ms", "hop_ms", "mels", "mfcc", "test_takes"})
    folder = Path(spec.body)
    if not folder.is_dir():
        raise InputError(f"{spec.text}: folder {folder} does not exist.")
    files = _wav_files(folder)
    if not files:
        raise InputError(f"{spec.text}: {folder} is empty (no .wav files in it or below it).")
    labels = _labels(folder, files, spec.text)
    rate = spec.pop_int("rate", 0)
    if "rate" in spec.params and rate <= 0:
        raise InputError(f"{spec.text}: rate={rate} must be a positive number of Hz.")
    seconds = spec.pop_float("seconds", 1.0)
    frame_ms = spec.pop_float("frame_ms", 40.0)
    hop_ms = spec.pop_float("hop_ms", 20.0)
    mels = spec.pop_int("mels", 40)
    mfcc = spec.pop_int("mfcc", 0)
    if mels < 1 or not 0 <= mfcc <= mels:
        raise InputError(f"{spec.text}: need mels >= 1 and 0 <= mfcc <= mels.")
    takes = [_FSDD_NAME.match(path.stem) for path in files]
    is_fsdd = all(match is not None for match in takes)
    test_takes = spec.pop_int("test_takes", 5)
    if "test_takes" in spec.params and (not is_fsdd or test_takes < 1):
        raise InputError(
            f"{spec.text}: test_takes needs a positive cutoff and every file named "
            "<label>_<speaker>_<take>.wav."
        )

    clips, sample_rate, notes = _read_clips(files, rate=rate, where=spec.text)
    framing = _framing(
        sample_rate=sample_rate, seconds=seconds, frame_ms=frame_ms, hop_ms=hop_ms, where=spec.text
    )
    lengths = np.array([len(clip) for clip in clips])
    batch = np.stack([_fit_length(clip, framing.samples) for clip in clips])
    cropped = int((lengths > framing.samples).sum())
    padded = int((lengths < framing.samples).sum())
    if cropped or padded:
        notes.append(
            f"to {seconds:g} s: centre-cropped {cropped} longer clips, zero-padded {padded} "
            "shorter ones"
        )
    try:
        features = log_mel(
            batch,
            sample_rate=sample_rate,
            seconds=seconds,
            frame_ms=frame_ms,
            hop_ms=hop_ms,
            mels=mels,
            mfcc=mfcc,
        )
    except InputError as exc:
        raise InputError(f"{spec.text}: {exc}") from None
    x = features[:, None, :, :]
    signals = _to_pcm16(batch)

    classes = _class_order(labels)
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    signals_test: np.ndarray | None = None
    rule = None
    if is_fsdd:
        take = np.array([int(match.group(1)) for match in takes if match is not None])
        is_test = take < test_takes
        x_test, y_test, x, y = x[is_test], y[is_test], x[~is_test], y[~is_test]
        signals_test, signals = signals[is_test], signals[~is_test]
        rule = f"FSDD convention: takes 0-{test_takes - 1} are the test split"
    return make_dataset(
        name=folder.name,
        spec=spec.text,
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        classes=classes,
        raw_dtype="float32",
        test_rule=rule,
        notes=tuple(notes),
        signals=signals,
        signals_test=signals_test,
        frontend=describe_frontend(
            sample_rate=sample_rate,
            seconds=seconds,
            frame_ms=frame_ms,
            hop_ms=hop_ms,
            mels=mels,
            mfcc=mfcc,
        ),
    )
