from .nets import INFNET_LIGHT, InfNet, InfNetOutput, MaskedImageModel, Res2Net

__all__ = ["InfNet", "InfNetOutput", "INFNET_LIGHT", "MaskedImageModel", "Res2Net"]
