"""The student / teacher network: shapes, masking, the EMA update, drop path per block."""

from __future__ import annotations

import torch

from voxssl.config.dinov2 import Dinov2Config, HeadConfig, ViTConfig
from voxssl.dinov2.model import build_pretrainer


def _model(**loss):
    from voxssl.config.dinov2 import LossConfig

    cfg = Dinov2Config(
        vit=ViTConfig(
            pretrained=False,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            patch_size=8,
            drop_path_rate=0.3,
        ),
        dino_head=HeadConfig(num_prototypes=12, hidden_dim=16, bottleneck_dim=8),
        loss=LossConfig(**loss),
    )
    cfg.crops.global_size = 32
    torch.manual_seed(0)
    return build_pretrainer(cfg)


def test_student_outputs_and_the_masked_patches():
    model = _model()
    global_crops, local_crops = torch.randn(4, 3, 32, 32), torch.randn(6, 3, 16, 16)
    masks = torch.zeros(4, 16, dtype=torch.bool)
    masks[0, :5] = True
    masks[3, 7] = True
    model.eval()
    out = model.student(global_crops, local_crops, masks)
    assert out.global_scores.shape == (4, 12) and out.local_scores.shape == (6, 12)
    assert out.masked_scores.shape == (6, 12) and out.global_cls.shape == (4, 16)
    # the student sees the mask token, the teacher the real patches
    teacher_cls, teacher_masked = model.teacher.teacher_scores(global_crops, masks)
    assert teacher_masked.shape == (6, 12)
    assert torch.allclose(teacher_cls[1], out.global_scores[1], atol=1e-5)  # crop 1: no mask
    assert not torch.allclose(teacher_masked, out.masked_scores, atol=1e-2)


def test_teacher_moves_towards_the_student():
    model = _model()
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.teacher.parameters()]
    model.update_teacher(0.9)
    for old, new, student in zip(
        before, model.teacher.parameters(), model.student.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * student)
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_drop_path_grows_with_depth_and_the_teacher_has_none_in_use():
    model = _model()
    rates = [
        getattr(layer.drop_path, "drop_prob", 0.0) for layer in model.student.backbone.encoder.layer
    ]
    assert rates == [0.0, 0.15, 0.3]
    model.train()
    assert model.student.training and not model.teacher.training


def test_without_ibot_the_mask_token_is_frozen():
    model = _model(ibot_weight=0.0)
    assert not model.student.backbone.embeddings.mask_token.requires_grad
