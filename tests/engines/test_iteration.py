import torch
from monai.engines import SupervisedTrainer

from infnet_monai.engines import MultiScaleIteration, scaled_size
from infnet_monai.losses import DeepSupervisionLoss
from infnet_monai.networks import InfNet

TINY = {"layers": (1, 1, 1, 1), "planes": (8, 16, 32, 64), "stem_channels": (8, 8, 16), "ra_channels": (16, 16, 16)}


def test_scaled_size_paper_rates():
    assert [scaled_size((352, 352), r) for r in (0.75, 1.0, 1.25)] == [(256, 256), (352, 352), (448, 448)]
    assert scaled_size((64, 96), 0.1) == (32, 32)


class CountingAdam(torch.optim.Adam):
    steps = 0

    def step(self, closure=None):
        CountingAdam.steps += 1
        return super().step(closure)


def test_one_step_per_scale_with_clipping():
    torch.manual_seed(0)
    net = InfNet(in_channels=1, **TINY)
    data = [
        {"image": torch.rand(1, 64, 64), "label": (torch.rand(1, 64, 64) > 0.5).float(), "edge": torch.zeros(1, 64, 64)}
        for _ in range(4)
    ]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    opt = CountingAdam(net.parameters(), lr=1e-3)
    seen_grad_max = []

    iteration = MultiScaleIteration(rates=(0.5, 1.0, 1.5), clip_value=0.01)
    before = [p.detach().clone() for p in net.parameters()]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=DeepSupervisionLoss(),
        iteration_update=iteration,
        decollate=False,
    )

    def _after_clip(engine):  # the gradients of the last step are still there, clipped
        seen_grad_max.append(max(p.grad.abs().max().item() for p in net.parameters() if p.grad is not None))

    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, _after_clip)
    trainer.run()
    assert CountingAdam.steps == 2 * 3  # 2 iterations x 3 scales
    assert all(g <= 0.01 + 1e-8 for g in seen_grad_max)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert torch.isfinite(trainer.state.output["loss"])


class RecordingLoss(DeepSupervisionLoss):
    def __init__(self):
        super().__init__()
        self.masks = []

    def forward(self, outputs, target, edge=None, mask=None):
        self.masks.append(None if mask is None else tuple(mask.shape))
        return super().forward(outputs, target, edge, mask=mask)


def test_loss_mask_reaches_the_loss_at_every_scale():
    torch.manual_seed(0)
    net = InfNet(in_channels=1, **TINY)
    item = {"image": torch.rand(1, 64, 64), "label": torch.zeros(1, 64, 64), "edge": torch.zeros(1, 64, 64)}
    for with_mask, expected in ((False, [None, None]), (True, [(2, 1, 32, 32), (2, 1, 64, 64)])):
        data = [dict(item, loss_mask=torch.ones(1, 64, 64)) if with_mask else dict(item) for _ in range(2)]
        loss = RecordingLoss()
        SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
            network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=loss,
            iteration_update=MultiScaleIteration(rates=(0.5, 1.0)), decollate=False,
        ).run()
        assert loss.masks == expected
