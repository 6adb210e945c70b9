import torch
from ignite.engine import Engine, Events

from infnet_monai.handlers import EncoderExporter
from infnet_monai.networks import InfNet


def test_exports_the_encoder_each_epoch_with_provenance(tmp_path):
    kwargs = {"in_channels": 1, "layers": (1, 1, 1, 1), "planes": (8, 16, 32, 64), "stem_channels": (8, 8, 16),
              "ra_channels": (16, 16, 16)}
    net = InfNet(**kwargs)
    path = tmp_path / "encoder.pt"
    exported = []

    def step(engine, batch):
        with torch.no_grad():
            next(net.backbone.parameters()).add_(1.0)
        return {"loss": torch.tensor(0.25)}

    engine = Engine(step)
    EncoderExporter(net.backbone, kwargs, str(path), {"seed": 0}).attach(engine)

    @engine.on(Events.EPOCH_COMPLETED)  # registered after the exporter, so it reads the fresh file
    def _record(e):
        exported.append(torch.load(path, weights_only=True)["metadata"]["epoch"])

    engine.run([0, 1], max_epochs=2)
    saved = torch.load(path, weights_only=True)
    assert saved["format"] == "infnet-monai-encoder/1"
    assert saved["metadata"]["epoch"] == 2 and saved["metadata"]["iteration"] == 4
    assert saved["metadata"]["last_loss"] == 0.25 and saved["metadata"]["seed"] == 0
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(saved["state_dict"][k], v)
    assert exported == [1, 2]
