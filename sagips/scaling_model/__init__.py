"""A calibrated model of SAGIPS training time and analysis rate (eq. 9) at any rank count.

- ``waiting``: compute, jitter, and what synchronous and stale-synchronous groups wait for;
- ``rings``: what one exchange of each mode costs (latency, bandwidth, Python/mpi4py overheads);
- ``calibrate``: those figures from ``sagips-bench comm`` and from a run's metrics;
- ``profiles``: target machines (``local``, ``polaris``, or a YAML file);
- ``prediction``: one job's training time and analysis rate;
- ``overlay``: the model's curve beside measured runs (``sagips-analyze --model``).

docs/scaling-model.md gives the formulas, the calibration and the validation.
"""

from sagips.scaling_model.prediction import Job, Machine, Prediction, predict

__all__ = ["Job", "Machine", "Prediction", "predict"]
