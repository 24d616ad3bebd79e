"""Performance helpers: FLOP counting, the conv3d ceiling measurement, Dice per label, thread report."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perfkit.measure import conv3d_ceiling, count_flops, dice_per_label, thread_report, time_call  # noqa: E402


def test_count_flops_matches_the_conv_formula():
    conv = torch.nn.Conv3d(2, 3, 3, padding=1, bias=False)
    x = torch.zeros(1, 2, 5, 6, 7)
    assert count_flops(conv, x) == 2 * 27 * 2 * 3 * 5 * 6 * 7


def test_conv3d_ceiling_is_a_positive_rate():
    assert conv3d_ceiling(channels=4, size=8, repeat=1) > 0


def test_dice_per_label():
    a = np.array([0, 1, 1, 2, 2, 0])
    b = np.array([0, 1, 2, 2, 2, 3])
    d = dice_per_label(a, b)
    assert d == {1: pytest.approx(2 / 3), 2: pytest.approx(0.8), 3: 0.0}
    assert dice_per_label(a, a, labels=[1, 5]) == {1: 1.0, 5: 1.0}
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(a, b[:3])


def test_thread_report_and_time_call():
    rep = thread_report()
    assert rep["torch_threads"] == torch.get_num_threads()
    assert time_call(lambda: None, repeat=2) >= 0
    with pytest.raises(ValueError, match="repeat"):
        time_call(lambda: None, repeat=0)


def test_onednn_routing_keeps_results():
    from monai.networks.nets import SegResNet

    from perfkit.measure import onednn_bf16_supported, use_onednn_conv3d

    torch.manual_seed(0)
    net = SegResNet(3, init_filters=8, in_channels=1, out_channels=3, blocks_down=(1, 1), blocks_up=(1,)).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        ref = net(x)
        assert use_onednn_conv3d(net) == sum(type(m) is torch.nn.Conv3d for m in net.modules()) > 0
        got = net(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert isinstance(onednn_bf16_supported(), bool)
