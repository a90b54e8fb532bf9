"""voxssl's fast pretraining step computes what the plain eager step computes, up to float rounding.

"Before" is benchmarks/eager_reference.py (vox2vec's layout written plainly: one forward per view,
contiguous tensors, default Adam); "after" is voxssl's step as the loop runs it. Each speed change
is checked on its own (views in one batch, channels-last levels, fused Adam, torch.compile) and
all together: the loss, every gradient, the batch-norm running statistics and the parameters
after one optimizer step.

In float64 the two steps agree to ~1e-14 (the same math; a real difference, such as batch-norm
statistics pooled over the views, shows at 1e-3 or more); in float32 they agree within a few times
the reference's own float32 rounding error (other kernels sum in another order).
"""

from __future__ import annotations

import copy

import pytest
import torch

from voxssl.config.model import ModelConfig
from voxssl.config.pretrain import PretrainConfig
from voxssl.device import CPU_CHANNELS_LAST_MIN_VOXELS, channels_last_min_voxels
from voxssl.models.blocks import PointwiseConv3d
from voxssl.models.build import build_pretrain_model
from voxssl.train.objective import PretrainObjective
from voxssl.train.performance import apply_memory_layout, build_adam

CPU = torch.device("cpu")
PATCH = (16, 16, 8)  # 2048 voxels: level 0 channels-last on CPU, the deeper levels contiguous

TINY = {
    "vox2vec": {"preset": "vox2vec", "base_channels": 2, "num_levels": 3, "projector_out": 8},
    "hierarchical": {
        "preset": "hierarchical",
        "base_channels": 2,
        "num_levels": 3,
        "projection_channels": 3,
        "projector_out": 8,
    },
}


def tiny(name: str, base_channels: int = 2) -> tuple[ModelConfig, PretrainConfig]:
    model = ModelConfig(**{**TINY[name], "base_channels": base_channels})
    pretrain = PretrainConfig(
        lr=1e-3,
        reconstruction_weight=10.0 if model.reconstruction != "none" else 0.0,
        patch_size=PATCH,
        positives_per_pair=40,
    )
    return model, pretrain


def make_batch(pairs: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = lambda: torch.rand(pairs, 1, *PATCH, generator=g).to(dtype)  # noqa: E731
    batch = {k: images() for k in ("view1", "view2", "target1", "target2")}
    upper = torch.tensor(PATCH)
    for key in ("positions1", "positions2"):
        batch[key] = (torch.rand(pairs, 40, 3, generator=g) * upper).long()
    batch["valid"] = torch.ones(pairs, 40, dtype=torch.bool)
    batch["valid"][1, 30:] = False  # padded positives
    return batch


def reference_module(benchmark_script):
    return benchmark_script("eager_reference")


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# (rtol, atol relative to the largest value of its kind) per dtype
TOLERANCE = {torch.float64: (1e-10, 1e-11), torch.float32: (1e-3, 1e-4)}


def assert_same_tensors(a: dict, b: dict, dtype: torch.dtype = torch.float32) -> None:
    """Every tensor of ``a`` equals ``b``'s up to float rounding; zero-sized differences of
    near-zero tensors (a bias before a batch norm) are measured against the largest value."""
    assert a.keys() == b.keys()
    rtol, atol = TOLERANCE[dtype]
    scale = max(float(t.abs().max()) for t in a.values() if t.is_floating_point() and t.numel())
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol * scale, msg=key)


def assert_same_buffers(a: torch.nn.Module, b: torch.nn.Module, dtype=torch.float32) -> None:
    """Batch-norm running statistics and counters."""
    sa, sb = dict(a.named_buffers()), dict(b.named_buffers())
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert_same_tensors({k: sa[k] for k in floats}, {k: sb[k] for k in floats}, dtype)
    for key in set(sa) - set(floats):  # num_batches_tracked
        assert torch.equal(sa[key], sb[key]), key


def assert_same_update(before: dict, a: torch.nn.Module, b: torch.nn.Module, gradients: dict, lr):
    """The optimizer moved every parameter alike. Adam's first step is ~lr * sign(gradient), so
    it is compared where the gradient stands clear of rounding noise (a bias feeding a batch norm
    has a zero gradient in exact arithmetic, and its sign is noise in any implementation)."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    scale = max(float(g.abs().max()) for g in gradients.values())
    compared = 0
    for key, grad in gradients.items():
        clear = grad.abs() > 1e-3 * scale
        step_a, step_b = pa[key].detach() - before[key], pb[key].detach() - before[key]
        torch.testing.assert_close(step_a[clear], step_b[clear], rtol=0, atol=1e-3 * lr, msg=key)
        assert float((step_a - step_b).abs().max()) <= 2 * lr * (1 + 1e-6), key
        compared += int(clear.sum())
    assert compared > 0.5 * sum(g.numel() for g in gradients.values())


def assert_same_grads(a: dict, b: dict, dtype: torch.dtype = torch.float32) -> None:
    assert_same_tensors(a, b, dtype)


def voxssl_step(model, optimizer, objective, batch, grad_clip=1.0):
    out = objective(model, batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    gradients = grads(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return out, gradients


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("preset", ["vox2vec", "hierarchical"])
def test_voxssl_step_matches_the_plain_eager_reference(preset, dtype, benchmark_script):
    ref = reference_module(benchmark_script)
    # four channels: with two-channel maps the BLAS product behind a channels-last 1x1
    # convolution's weight gradient sums thousands of products in one float32 accumulator (100x
    # the reference's rounding error; still exact in float64); from four channels on, voxssl's
    # float32 error is within 1-3x the reference's (both measured against float64)
    model_cfg, cfg = tiny(preset, base_channels=4)
    torch.manual_seed(0)
    model = apply_memory_layout(build_pretrain_model(model_cfg).to(dtype), CPU)
    reference = ref.ReferenceModel.from_config(model_cfg).to(dtype)
    reference.load_state_dict(model.state_dict())
    optimizer = build_adam(
        model.parameters(), CPU, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    assert optimizer.defaults["fused"] is True
    ref_optimizer = ref.make_optimizer(reference, cfg)
    batch = make_batch(dtype=dtype)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    out, gradients = voxssl_step(model, optimizer, PretrainObjective(cfg), batch)
    ref_loss, ref_terms = ref.reference_loss(reference, batch, cfg)
    ref_optimizer.zero_grad(set_to_none=True)
    ref_loss.backward()
    ref_gradients = grads(reference)
    torch.nn.utils.clip_grad_norm_(reference.parameters(), cfg.grad_clip)
    ref_optimizer.step()

    assert out.loss.dtype == dtype
    rtol = TOLERANCE[dtype][0]
    torch.testing.assert_close(out.loss, ref_loss.detach(), rtol=rtol, atol=0)
    assert out.terms.keys() == ref_terms.keys()
    for name, value in ref_terms.items():
        torch.testing.assert_close(out.terms[name], value.detach(), rtol=rtol, atol=0)
    assert_same_grads(gradients, ref_gradients, dtype)
    assert_same_buffers(model, reference, dtype)
    assert_same_update(before, model, reference, ref_gradients, cfg.lr)


def test_views_in_one_batch_equal_one_forward_per_view():
    model_cfg, _ = tiny("hierarchical")
    torch.manual_seed(1)
    merged = build_pretrain_model(model_cfg)
    separate = copy.deepcopy(merged)
    batch = make_batch(pairs=2)
    coords = [
        torch.tensor([[0, 1, 2, 3], [1, 15, 15, 7], [1, 0, 9, 4]]),
        torch.tensor([[1, 4, 4, 4], [0, 8, 3, 1], [0, 2, 2, 2]]),
        None,
    ]
    images = [batch["view1"], batch["view2"], batch["target1"]]

    outs = merged(images, coords)
    singles = [separate(image, c) for image, c in zip(images, coords, strict=True)]

    def total(outputs):
        loss = sum((o.projections**2 * torch.arange(8)).sum() for o in outputs[:2])
        loss = loss + sum((o.reconstruction**3).mean() for o in outputs)
        return loss + sum((level.sin()).mean() for o in outputs for level in o.pyramid)

    def tensors(outputs):
        found = {}
        for v, o in enumerate(outputs):
            found.update({(v, "level", i): level for i, level in enumerate(o.pyramid)})
            found[(v, "reconstruction")] = o.reconstruction
            if o.projections is not None:
                found[(v, "projections")] = o.projections
        return found

    assert len(tensors(outs)) == 3 * 3 + 3 + 2  # 3 views: levels, reconstructions; 2 projections
    assert_same_tensors(tensors(outs), tensors(singles))
    total(outs).backward()
    total(singles).backward()
    assert_same_grads(grads(merged), grads(separate))
    assert_same_buffers(merged, separate)  # running stats updated view by view, in order


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(
    "momentum, affine, track",
    [(0.1, True, True), (None, True, True), (0.3, False, True), (0.1, True, False)],
)
def test_per_view_batch_norm_equals_one_call_per_view(layout, momentum, affine, track):
    """:class:`PerViewBatchNorm` (the views' batch norms written into one output and one input
    gradient) against the plain module called view by view: output, input gradient, weight and
    bias gradients, running statistics and ``num_batches_tracked`` (cumulative average included)."""
    from voxssl.models.blocks import per_view

    torch.manual_seed(7)
    bn = torch.nn.BatchNorm3d(5, momentum=momentum, affine=affine, track_running_stats=track)
    bn = bn.double()
    if affine:
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    fmt = torch.channels_last_3d if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(6, 5, 4, 3, 2, dtype=torch.float64) * 3 + 1).to(memory_format=fmt)
    upstream = torch.randn(6, 5, 4, 3, 2, dtype=torch.float64)
    merged, separate = copy.deepcopy(bn), copy.deepcopy(bn)
    results = {}
    for name, module in (("merged", merged), ("separate", separate)):
        for _ in range(2):  # twice: the second call starts from updated running statistics
            xi = x.clone().requires_grad_()
            if name == "merged":
                y = per_view(module, xi, views=3)
                assert y.grad_fn.name() == "PerViewBatchNormBackward"  # the in-place path ran
            else:
                y = torch.cat([module(chunk) for chunk in xi.chunk(3)])
            (y * upstream).sum().backward()
        results[name] = {"y": y.detach(), "x.grad": xi.grad}
        results[name].update({f"grad {n}": p.grad for n, p in module.named_parameters()})
    assert_same_tensors(results["merged"], results["separate"], torch.float64)
    assert results["merged"]["y"].is_contiguous(memory_format=fmt)
    if track:
        assert_same_buffers(merged, separate, torch.float64)
        assert int(merged.num_batches_tracked) == 6  # 2 calls x 3 views, as 6 separate calls


def test_views_in_one_batch_reject_unequal_views():
    model = build_pretrain_model(ModelConfig(**TINY["vox2vec"]))
    with pytest.raises(ValueError, match="one shape"):
        model([torch.rand(1, 1, *PATCH), torch.rand(1, 1, 8, 8, 8)], [None, None])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_channels_last_levels_match_contiguous_levels(dtype):
    """The channels-last levels (oneDNN kernels, the 1x1 convolutions as matrix products, the
    gradient kept channels-last) compute the contiguous model's pyramid and gradients. float64:
    the same math; float32 on two channels: within rounding (PyTorch's channels-last CPU batch
    norm sums in another order, 30-50x the contiguous kernel's error on maps far from zero mean,
    which a deeper test model compounds beyond a fixed tolerance)."""
    model_cfg, _ = tiny("vox2vec")
    torch.manual_seed(2)
    contiguous = build_pretrain_model(model_cfg).backbone.to(dtype)
    mixed = copy.deepcopy(contiguous)
    mixed.channels_last_min_voxels = CPU_CHANNELS_LAST_MIN_VOXELS
    x = torch.rand(2, 1, *PATCH).to(dtype)
    a, b = contiguous.forward_features(x), mixed.forward_features(x)
    assert b[0].is_contiguous(memory_format=torch.channels_last_3d)  # 2048 voxels
    assert b[1].is_contiguous() and not b[1].is_contiguous(memory_format=torch.channels_last_3d)
    assert_same_tensors(dict(enumerate(a)), dict(enumerate(b)), dtype)
    sum((level * level.detach().roll(1, 1)).sum() for level in a).backward()
    sum((level * level.detach().roll(1, 1)).sum() for level in b).backward()
    assert_same_grads(grads(contiguous), grads(mixed), dtype)
    skip = mixed.skip_blocks[-1]  # level 0's 1x1 skip convolution: a matrix product there
    assert isinstance(skip, PointwiseConv3d)


def test_the_gpu_layout_rule_every_level_channels_last_matches_contiguous():
    """On a GPU every level runs channels-last (``channels_last_min_voxels(cuda) == 0``); the same
    code path runs here on the CPU, in float64: the pyramid and every gradient of the whole
    pretraining step are the contiguous model's."""
    assert channels_last_min_voxels(torch.device("cuda")) == 0
    model_cfg, cfg = tiny("hierarchical")
    torch.manual_seed(6)
    contiguous = build_pretrain_model(model_cfg).double()
    everywhere = copy.deepcopy(contiguous)
    everywhere.backbone.channels_last_min_voxels = 0
    batch = make_batch(dtype=torch.float64)
    objective = PretrainObjective(cfg)
    levels = everywhere.backbone.forward_features(batch["view1"])
    assert all(
        level.is_contiguous(memory_format=torch.channels_last_3d) and not level.is_contiguous()
        for level in levels
    )
    out_a, out_b = objective(contiguous, batch), objective(everywhere, batch)
    torch.testing.assert_close(out_a.loss, out_b.loss, rtol=1e-10, atol=0)
    out_a.loss.backward()
    out_b.loss.backward()
    assert_same_grads(grads(contiguous), grads(everywhere), torch.float64)


def test_one_channel_input_gets_channels_last_strides():
    """A one-channel volume is "contiguous" in both layouts, so ``.contiguous(channels_last_3d)``
    keeps its NCDHW strides and oneDNN would write the first convolution's many-channel output
    contiguous (one more layout copy before the first stage). The FPN gives the input explicit
    channels-last strides instead: the first convolution already writes channels-last, and the
    result is the contiguous one's."""
    model_cfg, _ = tiny("vox2vec")
    torch.manual_seed(5)
    contiguous = build_pretrain_model(model_cfg).backbone
    mixed = copy.deepcopy(contiguous)
    mixed.channels_last_min_voxels = CPU_CHANNELS_LAST_MIN_VOXELS
    seen = {}
    mixed.first_conv.register_forward_hook(
        lambda module, args, out: seen.update(input=args[0], output=out)
    )
    x = torch.rand(2, 1, *PATCH)
    assert x.contiguous(memory_format=torch.channels_last_3d).stride() == x.stride()
    b = mixed.forward_features(x)
    assert seen["input"].stride(1) == 1 and seen["input"].stride() != x.stride()
    assert seen["output"].is_contiguous(memory_format=torch.channels_last_3d)
    assert not seen["output"].is_contiguous()
    a = contiguous.forward_features(x)
    assert_same_tensors(dict(enumerate(a)), dict(enumerate(b)))
    # below the threshold the input is left as it is (already contiguous: no copy)
    small = torch.rand(2, 1, 8, 8, 8)
    mixed.forward_features(small)
    assert seen["input"].data_ptr() == small.data_ptr()


def test_fused_adam_matches_the_default_adam():
    torch.manual_seed(3)
    params = [torch.randn(5, 3, 3), torch.randn(7), torch.randn(2, 2, 3, 3, 3)]
    default = [p.clone().requires_grad_() for p in params]
    fused = [p.clone().requires_grad_() for p in params]
    opt_default = torch.optim.Adam(default, lr=1e-3, betas=(0.9, 0.999))
    opt_fused = build_adam(fused, CPU, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0)
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for a, b in zip(default, fused, strict=True):
            a.grad = torch.randn(a.shape, generator=g) * 10.0**-step
            b.grad = a.grad.clone()
        opt_default.step()
        opt_fused.step()
    for a, b in zip(default, fused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_compiled_step_matches_the_eager_step():
    """``pretrain.compile: true``: dynamo traces the whole pretraining model (views in one batch,
    per-view batch norm, channels-last levels) and AOT autograd builds the backward graph; the
    ``aot_eager`` backend runs those graphs without generating C++ (inductor's code generation
    takes minutes on a 2-core CPU), so what is checked is that compilation captures the step
    correctly."""
    from voxssl.train.loop import train_step
    from voxssl.train.performance import compile_model

    torch._dynamo.reset()
    model_cfg, cfg = tiny("hierarchical")
    torch.manual_seed(4)
    eager = apply_memory_layout(build_pretrain_model(model_cfg), CPU)
    compiled_copy = copy.deepcopy(eager)
    compiled = compile_model(compiled_copy, True, backend="aot_eager")
    assert compiled is not compiled_copy
    objective = PretrainObjective(cfg)
    batch = make_batch()
    outs = {}
    for name, module, params in (
        ("eager", eager, eager),
        ("compiled", compiled, compiled_copy),
    ):
        optimizer = build_adam(params.parameters(), CPU, lr=cfg.lr, betas=cfg.betas, weight_decay=0)
        before = {n: p.detach().clone() for n, p in params.named_parameters()}
        out, _ = train_step(module, objective, optimizer, batch, cfg.grad_clip)
        outs[name] = (out, before)
    torch.testing.assert_close(outs["compiled"][0].loss, outs["eager"][0].loss, rtol=1e-5, atol=0)
    assert_same_buffers(compiled_copy, eager)
    eager_grads = {n: p.grad for n, p in eager.named_parameters() if p.grad is not None}
    compiled_grads = {n: p.grad for n, p in compiled_copy.named_parameters() if p.grad is not None}
    assert_same_grads(compiled_grads, eager_grads)
    assert_same_update(outs["eager"][1], compiled_copy, eager, eager_grads, cfg.lr)


def test_recipe_option_compile_runs_the_loop_compiled(tiny_recipe, monkeypatch):
    """``pretrain.compile: true`` reaches torch.compile, the run completes, and the saved weights
    carry the model's own keys (no ``_orig_mod.`` prefix). The backend is swapped for
    ``aot_eager`` (no C++ code generation) to keep the test fast."""
    from voxssl.config.loader import from_dict
    from voxssl.errors import ConfigError
    from voxssl.models.weights import load_weights
    from voxssl.train import performance
    from voxssl.train.loop import BACKBONE_FILE, pretrain

    with pytest.raises(ConfigError, match="compile"):
        from_dict(PretrainConfig, {"compile": "sometimes"}, where="pretrain", source="r.yaml")
    calls = []
    real_compile = torch.compile

    def compile_with_aot_eager(model, backend="inductor", **kwargs):
        calls.append(backend)
        return real_compile(model, backend="aot_eager", **kwargs)

    torch._dynamo.reset()
    monkeypatch.setattr(performance.torch, "compile", compile_with_aot_eager)
    recipe = tiny_recipe.load(tiny_recipe(steps=1, compile=True))
    result = pretrain(recipe, progress=False)
    assert calls == ["inductor"] and result.last_step == 1
    weights, _ = load_weights(recipe.run_dir / BACKBONE_FILE)
    assert weights and not any("_orig_mod" in key for key in weights)
