"""Render the napari plugin's main workflow to PNG (for the README): scan + labels + both dock widgets.

Usage (from the repository root; needs a display, so it re-runs itself under ``xvfb-run`` when there is none)::

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--model brain-mri] [--sam-checkpoint FILE]

Writes ``segment.png`` (sample T1 brain + automatic brain mask + Segment widget with its volume table),
``labels.png`` (TotalSegmentator's CT and label map, opened as labels with names, + the Labels widget and
the RAS/LPS/HU cursor readout; needs ../shared/data), ``workflow.png`` (both widgets docked; SAM clicks with
a released ``sam_vit_b`` when one is given or cached, else a toy SAM whose candidate is hidden) and
``sam.png``: the SAM prompt widget with LiteMedSAM's real weights (the default model, offline) on a real scan,
pyradiomics brain1 (MR) from ``../shared/data``: a box on the tumour's middle slice (taken from the reference
label, as a user would draw it), then a 3D box propagated over the tumour's slices and accepted into a labels
layer. ``--only sam`` makes ``sam.png`` alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _wait(job, app, timeout_s: float) -> None:
    t0 = time.time()
    while job is not None and job.running:
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout_s:
            raise TimeoutError(f"job still running after {timeout_s} s")
    for _ in range(20):
        app.processEvents()


def _settle(app, seconds: float = 0.5) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def _sam_model(checkpoint: str | None):
    from medseg.errors import ModelError
    from medseg.sam import build_sam_network, load_model, wrap_network

    try:
        return load_model("sam_vit_b", checkpoint=checkpoint, download=False), True
    except ModelError:
        net = build_sam_network(
            image_size=256, encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
            encoder_global_attn_indexes=(1,), window_size=4, prompt_embed_dim=64, decoder_mlp_dim=128,
            decoder_num_heads=2, seed=0,
        )
        return wrap_network(net, "toy SAM, random weights (no checkpoint available)"), False


def _labels_screenshot(out: Path, size: tuple[int, int], app) -> Path | None:
    """``labels.png``: TotalSegmentator's CT (``example_ct_sm``) + its label map (opened as labels with names) + the Labels widget,
    with the cursor readout over the liver. Needs ../shared/data (skipped without it)."""
    import napari
    import nibabel as nib
    import numpy as np

    from medseg_napari._cursor import cursor_readout
    from medseg_napari._layers import RAS_TO_WORLD

    data = Path(os.environ.get("MEDSEG_TEST_DATA") or REPO / ".." / "shared" / "data")
    ref = data / "TotalSegmentator" / "tests" / "reference_files"
    if not (ref / "example_seg.nii.gz").is_file():
        print(f"labels.png skipped: no TotalSegmentator data under {data}", file=sys.stderr)
        return None
    viewer = napari.Viewer(show=False, title="medseg")
    viewer.window._qt_window.resize(*size)
    viewer.open(str(ref / "example_ct_sm.nii.gz"), plugin="medseg")  # the CT example_seg was made from
    (seg,) = viewer.open(str(ref / "example_seg.nii.gz"), plugin="medseg")
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Labels")
    img = nib.load(str(ref / "example_seg.nii.gz"))
    liver = np.argwhere(np.asarray(img.dataobj) == 5)
    centre = liver[len(liver) // 2]
    ras = img.affine[:3, :3] @ centre + img.affine[:3, 3]
    world = RAS_TO_WORLD @ ras
    viewer.dims.set_point(0, float(world[0]))  # the axial slice through the liver's middle voxel
    viewer.text_overlay.text = cursor_readout(list(viewer.layers), world)  # as if the mouse were on the liver
    widget.table.scrollToItem(widget.table.item(widget._row_of(5), 0))
    _settle(app, 1.0)
    path = out / "labels.png"

def litemedsam_screenshot(path: Path, size: tuple[int, int]) -> Path:
    """``sam.png``: LiteMedSAM (real weights) on pyradiomics brain1: box on a slice, 3D box, accepted."""
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from medseg.io import read
    from medseg.sam.protocol import plane
    from medseg_napari._layers import GEOMETRY_KEY, ijk_to_data, volume_to_layer_data

    app = QApplication.instance()
    shared = os.environ.get("MEDSEG_TEST_DATA") or (REPO / ".." / "shared" / "data")
    data = (Path(shared) / "pyradiomics" / "data").resolve()
    vol = read(data / "brain1_image.nrrd")
    lab = read(data / "brain1_label.nrrd").array > 0
    viewer = napari.Viewer(show=False, title="medseg — SAM prompt (LiteMedSAM)")
    viewer.window._qt_window.resize(*size)
    layer_data, kwargs, _ = volume_to_layer_data(vol, name="brain1 MR (pyradiomics)")
    image = viewer.add_image(layer_data, **kwargs)
    _, sam = viewer.window.add_plugin_dock_widget("medseg", "SAM prompt")
    sam.model_combo.setCurrentText("litemedsam")
    _wait(sam.load_selected_model(), app, timeout_s=1800)
    ks = np.nonzero(lab.any(axis=(0, 1)))[0]
    z0, z1 = int(ks.min()), int(ks.max())
    zm = int((z1 - z0) / 2 + z0)
    sam.show_slice(2, zm)
    ys, xs = np.nonzero(plane(lab.astype(np.uint8), 2, zm))
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    geom = image.metadata[GEOMETRY_KEY]
    corners = np.array([[x0, y0, zm], [x0, y1, zm], [x1, y1, zm], [x1, y0, zm]], dtype=float)
    _, shapes = sam._prompt_layers()
    shapes.add_rectangles([ijk_to_data(corners, geom)])
    _settle(app, 0.5)
    _wait(sam.job, app, timeout_s=1800)
    sam.z_from.setValue(z0)
    sam.z_to.setValue(z1)
    _wait(sam.propagate(), app, timeout_s=3600)
    sam.label_name.setText("tumour")
    status = sam.status.text()
    sam.accept()
    sam.status.setText(f"{status}  →  accepted as label 1 'tumour' (slices {z0}–{z1}, box drawn on slice {zm})")
    sam._updating_shapes = True  # show the drawn box again (accepting cleared the prompts) without re-prompting
    try:
        shapes.add_rectangles([ijk_to_data(corners, geom)])
    finally:
        sam._updating_shapes = False
    viewer.layers.selection.active = image
    centre = image.data_to_world(ijk_to_data(np.array([(x0 + x1) / 2, (y0 + y1) / 2, zm]), geom))
    viewer.camera.center = tuple(np.asarray(centre)[list(viewer.dims.displayed)])
    viewer.camera.zoom *= 2.2
    _settle(app, 1.0)
    viewer.screenshot(str(path), canvas_only=False)
    viewer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--model", default="brain-mri", help="segmentation model (registry name or spec path)")
    parser.add_argument("--sam-checkpoint", default=None, help="sam_vit_b checkpoint file (optional)")
    parser.add_argument("--size", default="1500x950", help="window size WxH in pixels")
    parser.add_argument("--only", choices=["all", "sam"], default="all", help="which screenshots to make")
    args = parser.parse_args(argv)

    if not os.environ.get("DISPLAY") and not os.environ.get("_MEDSEG_XVFB"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("no display and no xvfb-run: install xvfb (apt-get install xvfb xauth)", file=sys.stderr)
            return 2
        env = dict(os.environ, _MEDSEG_XVFB="1")
        cmd = [xvfb, "-a", "-s", "-screen 0 1920x1200x24", sys.executable, __file__, *(argv or sys.argv[1:])]
        return subprocess.call(cmd, env=env)

    # torch's optional triton must load before Mesa's software OpenGL (see _workers.avoid_llvm_clash)
    import monai  # noqa: F401
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from medseg_napari._layers import GEOMETRY_KEY, ijk_to_data

    args.out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))
    app = QApplication.instance() or QApplication([])
    if args.only == "sam":
        print(litemedsam_screenshot(args.out / "sam.png", (width, height)))
        return 0
    viewer = napari.Viewer(show=False, title="medseg")
    viewer.window._qt_window.resize(width, height)
    (image,) = viewer.open_sample("medseg", "brain-t1")

    seg_dock, seg = viewer.window.add_plugin_dock_widget("medseg", "Segment")
    seg.model_combo.setEditText(args.model)
    seg.device_combo.setCurrentText("cpu")
    t0 = time.time()
    _wait(seg.run(), app, timeout_s=900)
    print(f"segment: {seg.status.text()} ({time.time() - t0:.1f} s)")
    if seg.last_labels_layer is None:
        print("segmentation failed; see the message above", file=sys.stderr)
        return 1
    labels = seg.last_labels_layer
    geom = image.metadata[GEOMETRY_KEY]
    step = list(viewer.dims.current_step)
    step[0] = image.data.shape[0] // 2 + 2
    viewer.dims.current_step = tuple(step)
    viewer.layers.selection.active = labels
    _settle(app)
    viewer.screenshot(str(args.out / "segment.png"), canvas_only=False)
    labels_png = _labels_screenshot(args.out, (width, height), app)
    if labels_png is not None:
        print(labels_png)

    _, sam = viewer.window.add_plugin_dock_widget("medseg", "SAM prompt")
    model, real = _sam_model(args.sam_checkpoint)
    sam.use_model(model)
    sam.image_combo.setCurrentText(image.name)
    sam.labels_combo.setCurrentText(labels.name)
    sam.label_id.setValue(2)
    sam.label_name.setText("lesion")
    axis, index = sam.current_slice()
    for ijk, positive in (([150.0, 160.0, 0.0], True), ([165.0, 120.0, 0.0], True), ([95.0, 70.0, 0.0], False)):
        ijk = np.array(ijk)
        ijk[axis] = index
        _wait(sam.add_point(image.data_to_world(ijk_to_data(ijk, geom)), positive=positive), app, timeout_s=300)
    print(f"sam ({'released checkpoint' if real else 'toy random weights'}): {sam.status.text()}")
    if not real:
        # a random-weight SAM's candidate is noise: show the prompts and the widget, not a fake result
        viewer.layers["SAM preview"].visible = False
        sam.status.setText("toy SAM (random weights): candidate hidden in this screenshot; a released "
                           "checkpoint shows its mask here")
    viewer.layers["SAM prompts"].size = 10
    viewer.layers.selection.active = image
    _settle(app, 1.0)
    viewer.screenshot(str(args.out / "workflow.png"), canvas_only=False)
    viewer.window.remove_dock_widget(seg_dock)
    _settle(app, 1.0)
    viewer.close()
    litemedsam_screenshot(args.out / "sam.png", (width, height))
    for name in ("segment.png", "sam.png", "workflow.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
