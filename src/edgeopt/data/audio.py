"""WAV folders. Filled in by the audio loader."""
