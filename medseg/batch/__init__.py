"""``medseg batch``: resumable, fault-tolerant segmentation of whole folder trees, locally or on Ray.

Modules: :mod:`~medseg.batch.discover` (find cases), :mod:`~medseg.batch.naming` (output paths),
:mod:`~medseg.batch.state` (resume records), :mod:`~medseg.batch.summary` (CSV + provenance),
:mod:`~medseg.batch.settings` (one run's options), :mod:`~medseg.batch.runner` (scheduling),
:mod:`~medseg.batch.isolate` (worker processes), :mod:`~medseg.batch.ray_backend` (Ray actors) and
:mod:`~medseg.batch.worker` (one case on a worker, through :mod:`medseg.pipeline`: batch only schedules).
Nothing heavy is imported here.
"""
