"""``medseg batch``: resumable, fault-tolerant segmentation of whole folder trees, locally or on Ray.

Modules: :mod:`~medseg.batch.discover` (find cases), :mod:`~medseg.batch.naming` (output paths),
:mod:`~medseg.batch.state` (resume records), :mod:`~medseg.batch.summary` (CSV + provenance),
:mod:`~medseg.batch.runner` (the pipeline) and :mod:`~medseg.batch.ray_backend` (Ray actors).
Nothing heavy is imported here.
"""
