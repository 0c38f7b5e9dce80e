"""WAV folders -> log-mel features: shapes, the FSDD take rule, sample rates, bad files, log_mel."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import scipy.fft

from edgeopt.data import load_data
from edgeopt.data.audio import log_mel
from edgeopt.data.audio import mel_filterbank
from edgeopt.data.audio import read_wav
from edgeopt.errors import InputError
from edgeopt.testing import shared_data_dir

RATE_HZ = 8000
#: One tone per class, so the classes differ the way spoken digits do: in their spectrum.
TONE_HZ = {"0": 500.0, "1": 1500.0}
#: Test takes (0-4) are quiet and training takes loud, so a test can see where each clip went.
TEST_AMPLITUDE, TRAIN_AMPLITUDE = 0.05, 0.8


def _tone(hz: float, *, seconds: float, rate: int = RATE_HZ, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)


def _write_wav(
    path: Path, signal: np.ndarray, *, rate: int = RATE_HZ, width: int = 2, channels: int = 1
) -> None:
    """Write a PCM WAV of ``width`` bytes per sample, with the same signal on every channel."""
    scale = float(1 << (8 * width - 1)) - 1
    ints = np.round(np.clip(signal, -1, 1) * scale).astype(np.int64)
    ints = np.repeat(ints[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        blob = (ints + 128).astype(np.uint8).tobytes()
    else:  # little-endian two's complement, cut to ``width`` bytes
        blob = ints.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :width].tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(blob)


def _write_fsdd_folder(root: Path, *, takes: int = 10) -> None:
    """FSDD-style names ``<label>_<speaker>_<take>.wav``: 2 labels x 2 speakers x ``takes``."""
    for label, hz in TONE_HZ.items():
        for speaker in ("ann", "bob"):
            for take in range(takes):
                amplitude = TEST_AMPLITUDE if take < 5 else TRAIN_AMPLITUDE
                signal = _tone(hz, seconds=0.5, amplitude=amplitude)
                _write_wav(root / f"{label}_{speaker}_{take}.wav", signal)


def test_audio_gives_49x40_log_mel_features_for_one_second_clips(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    data = load_data(f"audio:{tmp_path}")
    assert data.input_shape == (1, 49, 40)
    assert data.classes == ("0", "1")
    assert data.raw["train"].dtype == np.float32
    assert data.normalization.raw_dtype == "float32"
    assert data.frontend["sample_rate"] == 8000
    assert data.frontend["n_fft"] == 512
    assert any("zero-padded 40 shorter ones" in note for note in data.notes)


def test_audio_mfcc_parameter_gives_49x10_features(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    data = load_data(f"audio:{tmp_path}?mfcc=10")
    assert data.input_shape == (1, 49, 10)
    assert data.frontend["features"] == "mfcc"
    assert data.frontend["frontend_ops"]["dct_macs"] == 49 * 40 * 10


def test_audio_frontend_counts_only_nonzero_mel_taps(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    ops = load_data(f"audio:{tmp_path}").frontend["frontend_ops"]
    taps = int(np.count_nonzero(mel_filterbank(sample_rate=8000, n_fft=512, mels=40)))
    assert ops["frames"] == 49 and ops["fft_size"] == 512
    assert ops["mel_macs"] == 49 * taps
    assert ops["mel_macs"] < 49 * 257 * 40 // 10  # triangles cover a small part of the spectrum
    assert ops["dct_macs"] == 0


def test_audio_fsdd_names_put_takes_0_to_4_in_the_test_split(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    data = load_data(f"audio:{tmp_path}")
    assert data.sizes()["test"] == 2 * 2 * 5
    assert data.sizes()["train"] + data.sizes()["val"] == 2 * 2 * 5
    assert data.split_rule.startswith("FSDD convention: takes 0-4 are the test split")
    # quiet takes 0-4 all landed in test, loud takes 5-9 all in train / val
    assert data.raw["test"].max() < min(data.raw["train"].max(), data.raw["val"].max()) - 3


def test_audio_test_takes_parameter_moves_the_cutoff(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    data = load_data(f"audio:{tmp_path}?test_takes=2")
    assert data.sizes()["test"] == 2 * 2 * 2
    assert data.split_rule.startswith("FSDD convention: takes 0-1 are the test split")


def test_audio_labels_come_from_class_subfolders(tmp_path: Path) -> None:
    for label, hz in (("no", 400.0), ("yes", 1200.0)):
        for i in range(6):
            _write_wav(tmp_path / label / f"clip{i}.wav", _tone(hz, seconds=0.3))
    data = load_data(f"audio:{tmp_path}")
    assert data.classes == ("no", "yes")
    assert data.sizes()["test"] == 2  # no FSDD names: 20% of each class held out
    assert data.split_rule.startswith("stratified 20% test holdout")


def test_audio_refuses_mixed_sample_rates_naming_the_file(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    _write_wav(tmp_path / "1_bob_9.wav", _tone(1500.0, seconds=0.5, rate=16000), rate=16000)
    with pytest.raises(InputError, match=r"1_bob_9\.wav: sample rate 16000 Hz differs") as info:
        load_data(f"audio:{tmp_path}")
    assert "8000 Hz" in str(info.value) and "?rate=N" in str(info.value)


def test_audio_rate_parameter_resamples_other_rates_with_a_note(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    _write_wav(tmp_path / "1_bob_9.wav", _tone(1500.0, seconds=0.5, rate=16000), rate=16000)
    data = load_data(f"audio:{tmp_path}?rate=8000")
    assert data.input_shape == (1, 49, 40)
    assert "resampled 1 of 40 files to 8000 Hz (1 from 16000 Hz)" in data.notes


def test_resampled_tone_matches_the_same_tone_recorded_at_the_target_rate(tmp_path: Path) -> None:
    for i in range(2):  # two clips per class, so the holdout puts one of each in test
        _write_wav(tmp_path / "a" / f"low{i}.wav", _tone(700.0, seconds=1.0), rate=8000)
        _write_wav(
            tmp_path / "b" / f"high{i}.wav", _tone(700.0, seconds=1.0, rate=16000), rate=16000
        )
    data = load_data(f"audio:{tmp_path}?rate=8000")
    test = data.raw["test"][np.argsort(data.labels["test"]), 0]
    low, high = test[0], test[1]
    peak = int(low.mean(axis=0).argmax())
    assert int(high.mean(axis=0).argmax()) == peak
    assert np.abs(low[:, peak] - high[:, peak]).max() < 0.05


def test_audio_refuses_a_corrupt_wav_naming_it(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path)
    (tmp_path / "0_ann_7.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    with pytest.raises(InputError, match=r"0_ann_7\.wav: cannot be parsed as a PCM WAV"):
        load_data(f"audio:{tmp_path}")


def test_audio_refuses_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere does not exist"):
        load_data(f"audio:{tmp_path / 'nowhere'}")


def test_audio_refuses_folder_without_wav_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no audio")
    with pytest.raises(InputError, match=r"is empty \(no \.wav files"):
        load_data(f"audio:{tmp_path}")


def test_audio_refuses_file_names_without_a_label_prefix(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path, takes=2)
    _write_wav(tmp_path / "recording.wav", _tone(500.0, seconds=0.2))
    with pytest.raises(InputError, match=r"cannot derive a label from recording\.wav"):
        load_data(f"audio:{tmp_path}")


def test_audio_refuses_all_wavs_in_a_single_subfolder(tmp_path: Path) -> None:
    _write_fsdd_folder(tmp_path / "recordings", takes=2)
    with pytest.raises(InputError, match="one sub-folder 'recordings'"):
        load_data(f"audio:{tmp_path}")


@pytest.mark.parametrize(
    ("query", "message"),
    [("mfcc=41", "mfcc <= mels"), ("test_takes=0", "test_takes"), ("mel=40", "unknown")],
)
def test_audio_refuses_bad_parameters(tmp_path: Path, query: str, message: str) -> None:
    _write_fsdd_folder(tmp_path, takes=6)
    with pytest.raises(InputError, match=message):
        load_data(f"audio:{tmp_path}?{query}")


@pytest.mark.parametrize(("width", "channels"), [(1, 1), (2, 2), (3, 1), (4, 2)])
def test_read_wav_decodes_every_pcm_width_and_averages_channels(
    tmp_path: Path, width: int, channels: int
) -> None:
    signal = _tone(300.0, seconds=0.1, amplitude=0.7)
    _write_wav(tmp_path / "tone.wav", signal, width=width, channels=channels)
    samples, rate = read_wav(tmp_path / "tone.wav")
    assert rate == RATE_HZ and samples.shape == signal.shape
    assert np.abs(samples - signal).max() < 2.0 / (1 << (8 * width - 1)) + 1e-6


@pytest.mark.parametrize("tone_hz", [300.0, 440.0, 1000.0, 2500.0])
def test_log_mel_of_a_pure_tone_peaks_in_the_mel_filter_around_its_frequency(
    tone_hz: float,
) -> None:
    # The HTK mel filters, written out again here: the filter whose triangle answers most at the
    # tone's frequency is the one the tone's energy must land in.
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595 * np.log10(1 + hz / 700)

    edges = 700 * (10 ** (np.linspace(mel(np.array(20.0)), mel(np.array(4000.0)), 42) / 2595) - 1)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    response = np.minimum(
        (tone_hz - lower) / (center - lower), (upper - tone_hz) / (upper - center)
    )
    features = log_mel(_tone(tone_hz, seconds=1.0), sample_rate=RATE_HZ)
    assert features.shape == (49, 40)
    assert int(features.mean(axis=0).argmax()) == int(response.argmax())


def test_log_mel_keeps_the_centre_of_a_long_clip() -> None:
    tone = _tone(800.0, seconds=1.0)
    long_clip = np.concatenate([np.zeros(4000), tone, np.zeros(4000)])
    np.testing.assert_allclose(
        log_mel(long_clip, sample_rate=RATE_HZ), log_mel(tone, sample_rate=RATE_HZ), atol=1e-4
    )


def test_log_mel_of_a_batch_matches_each_clip() -> None:
    clips = np.stack([_tone(hz, seconds=1.0) for hz in (300.0, 900.0, 2000.0)])
    batch = log_mel(clips, sample_rate=RATE_HZ, mfcc=10)
    assert batch.shape == (3, 49, 10)
    for clip, features in zip(clips, batch, strict=True):
        np.testing.assert_allclose(log_mel(clip, sample_rate=RATE_HZ, mfcc=10), features, atol=1e-4)


def test_mfcc_is_the_orthonormal_dct_of_the_log_mel() -> None:
    tone = _tone(600.0, seconds=1.0) + _tone(1900.0, seconds=1.0, amplitude=0.2)
    log_mels = log_mel(tone, sample_rate=RATE_HZ)
    expected = scipy.fft.dct(log_mels.astype(np.float64), type=2, norm="ortho", axis=-1)[:, :10]
    np.testing.assert_allclose(log_mel(tone, sample_rate=RATE_HZ, mfcc=10), expected, atol=1e-3)


def test_log_mel_of_silence_is_the_log_offset() -> None:
    np.testing.assert_allclose(log_mel(np.zeros(100), sample_rate=RATE_HZ), np.log(1e-6), rtol=1e-6)


@pytest.mark.skipif(
    shared_data_dir("fsdd") is None,
    reason="no shared/data/fsdd above this checkout (only development machines have it)",
)
def test_audio_loads_the_full_fsdd_with_takes_0_to_4_as_its_300_test_clips() -> None:
    folder = shared_data_dir("fsdd")
    assert folder is not None
    data = load_data(f"audio:{folder / 'recordings'}")  # its speed: benchmarks/kws.py
    assert data.input_shape == (1, 49, 40)
    assert data.classes == tuple(str(d) for d in range(10))
    # 10 digits x 6 speakers x takes 0-4; the other 2700 clips are train + val
    assert data.sizes()["test"] == 300
    assert data.sizes()["train"] + data.sizes()["val"] == 2700
    assert np.bincount(data.labels["test"]).tolist() == [30] * 10


def test_a_wav_whose_chunk_size_runs_past_the_file_is_one_sentence(tmp_path: Path) -> None:
    """The standard library's chunk reader raised a bare RuntimeError."""
    import struct

    path = tmp_path / "bad.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(bytes(800))
    blob = bytearray(path.read_bytes())
    # a "junk" chunk before "fmt " whose size points far past the end of the file
    junk = b"junk" + struct.pack("<I", 0x7FFFFFF0)
    path.write_bytes(bytes(blob[:12]) + junk + bytes(blob[12:]))
    with pytest.raises(InputError, match="bad.wav: cannot be parsed as a PCM WAV file"):
        read_wav(path)
