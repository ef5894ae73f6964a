"""The live-tensor-bytes tracker (implemented in :mod:`membptt.execution.memtrack`).

Re-exported here for the measurement module; see that module for what is counted and the
caveats.
"""

from ..execution.memtrack import LiveBytesTracker, track_peak

__all__ = ["LiveBytesTracker", "track_peak"]
