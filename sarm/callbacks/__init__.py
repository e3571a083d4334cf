from sarm.callbacks.p_annealing import PAnnealing
from sarm.callbacks.stop_on_signal import StopOnSignal
from sarm.callbacks.temporal_masking import AdaptiveTemporalMasking

__all__ = ["AdaptiveTemporalMasking", "PAnnealing", "StopOnSignal"]
