"""Data-parallel helpers of the train loop: gradient averaging for a module trained through
its methods rather than ``forward`` (where DDP hooks in), the check that the replicas stayed
equal, and the mean of a number over the workers."""

from __future__ import annotations

import torch


class Averaging:
    """Gradient averaging across workers for a module trained through methods, not forward."""

    def __init__(self, params: list[torch.nn.Parameter], world: int) -> None:
        self.params, self.world, self.ready = params, world, 0
        self.handles = [p.register_post_accumulate_grad_hook(self._hook) for p in params]

    def _hook(self, _: torch.Tensor) -> None:
        # One all-reduce once every gradient of this backward exists: no reliance on the
        # order in which autograd finishes them (every parameter gets a gradient each step).
        self.ready += 1
        if self.ready < len(self.params):
            return
        import torch.distributed as dist

        self.ready = 0
        flat = torch.cat([p.grad.reshape(-1) for p in self.params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in self.params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self.handles:
            handle.remove()


def average_gradients(module: torch.nn.Module) -> Averaging:
    """Make every worker's replica start equal and step on the mean gradient (what DDP does)."""
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.requires_grad]
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world > 1:
        for p in module.parameters():
            dist.broadcast(p.data, src=0)
    return Averaging(params if world > 1 else [], world)


def check_replicas_equal(module: torch.nn.Module) -> None:
    """Fail loudly if the workers' copies of ``module`` drifted apart (gradient averaging broke)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    low, high = flat.clone(), flat.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"replicas differ after training (max gap {float((high - low).max()):.3g})")


def world_mean(value: float, device: torch.device) -> float:
    """Mean of ``value`` over all workers (the value itself when training alone)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()
