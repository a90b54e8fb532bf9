import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from voxssl.losses.infonce import InfoNCELoss


def naive_nt_xent(z1, z2, temperature):
    """Row by row: -log(exp(s_pos) / sum_{b != a} exp(s_ab)), averaged over the 2N rows."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = 0.0
    for a in range(2 * n):
        partner = (a + n) % (2 * n)
        sims = [float(z[a] @ z[b]) / temperature for b in range(2 * n)]
        denominator = sum(math.exp(s) for b, s in enumerate(sims) if b != a)
        total += -math.log(math.exp(sims[partner]) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_the_naive_formula(temperature):
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(7, 5, generator=generator), torch.randn(7, 5, generator=generator)
    loss = InfoNCELoss(temperature)(z1, z2)
    assert loss.item() == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-5)
    assert InfoNCELoss(temperature)(z2, z1).item() == pytest.approx(
        loss.item(), rel=1e-6
    )  # symmetric


def test_closed_form_for_orthogonal_identical_views():
    n, tau = 6, 0.1
    z = torch.eye(8, dtype=torch.float64)[
        :n
    ]  # float64: the loss is ~5e-4, below float32's resolution of 1/tau
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))  # positives at 1/tau, negatives at 0
    assert InfoNCELoss(tau)(z, z).item() == pytest.approx(expected, rel=1e-5)


def test_gradients_are_finite_and_validation():
    z1 = torch.randn(4, 3, requires_grad=True)
    InfoNCELoss()(z1, z1.detach().clone()).backward()
    assert torch.isfinite(z1.grad).all()
    with pytest.raises(ValueError):
        InfoNCELoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        InfoNCELoss(temperature=0)
    assert InfoNCELoss()(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0


def _distributed_worker(rank, world, init_file, z1_all, z2_all, counts, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        start = sum(counts[:rank])
        z1 = z1_all[start : start + counts[rank]].clone().requires_grad_(True)
        z2 = z2_all[start : start + counts[rank]].clone().requires_grad_(True)
        loss = InfoNCELoss(0.2, gather_distributed=True)(z1, z2)
        loss.backward()
        uneven = [2, 4]  # ranks may hold different numbers of positives
        rows = slice(sum(uneven[:rank]), sum(uneven[: rank + 1]))
        uneven_loss = InfoNCELoss(0.2, gather_distributed=True)(z1_all[rows], z2_all[rows])
        queue.put(
            (rank, loss.item(), z1.grad.tolist(), z2.grad.tolist(), uneven_loss.item())
        )  # plain data
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_all_gather_of_negatives_across_ranks_is_gradient_correct(tmp_path):
    """Two gloo ranks with 3 and 3 positives == one process with all 6 (loss and gradients)."""
    generator = torch.Generator().manual_seed(1)
    counts = [3, 3]
    z1_all, z2_all = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    queue = mp.get_context("spawn").Queue()
    mp.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "init"), z1_all, z2_all, counts, queue),
        nprocs=2,
        join=True,
    )
    results = {r[0]: r[1:] for r in (queue.get(timeout=60) for _ in range(2))}

    z1 = z1_all.clone().requires_grad_(True)
    z2 = z2_all.clone().requires_grad_(True)
    global_loss = InfoNCELoss(0.2)(z1, z2)
    global_loss.backward()
    mean_of_ranks = sum(results[r][0] for r in range(2)) / 2
    assert mean_of_ranks == pytest.approx(global_loss.item(), rel=1e-5)
    for rank in range(2):
        rows = slice(sum(counts[:rank]), sum(counts[: rank + 1]))
        # each rank holds the gradient of the SUM of the ranks' losses; DDP then averages over ranks
        assert torch.allclose(torch.tensor(results[rank][1]) / 2, z1.grad[rows], atol=1e-6)
        assert torch.allclose(torch.tensor(results[rank][2]) / 2, z2.grad[rows], atol=1e-6)
    # uneven split: each rank's loss is the mean over its own rows against all 12 candidates
    z = F.normalize(torch.cat([z1_all, z2_all]), dim=1)
    logits = (z @ z.T / 0.2).fill_diagonal_(float("-inf"))
    per_row = F.cross_entropy(
        logits, torch.cat([torch.arange(6) + 6, torch.arange(6)]), reduction="none"
    )
    for rank, rows in enumerate(([0, 1], [2, 3, 4, 5])):
        own = per_row[rows + [r + 6 for r in rows]].mean()
        assert results[rank][3] == pytest.approx(own.item(), rel=1e-5)
