"""Measurement helpers shared by ``tests/`` and ``benchmarks/``: Dice, the conv3d ceiling, FLOP counts,
timings, thread reports. Not part of the medseg library (not installed); import it from a source checkout
(the repository root on ``sys.path``, as pytest and the benchmark scripts set it).
"""
