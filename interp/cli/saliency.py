"""Attention vs gradient saliency agreement, per head and layer (text prompts or WAV files).

    interp saliency smollm2 --input "The capital of France is" --method integrated_gradients
    interp saliency whisper-tiny.en --input data/speech/meeting.wav --method occlusion
"""

from interp.analyze.saliency_cli import add_saliency_arguments as add_arguments
from interp.analyze.saliency_cli import saliency_command as run

__all__ = ["add_arguments", "run"]
