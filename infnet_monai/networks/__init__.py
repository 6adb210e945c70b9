from .nets import INFNET_LIGHT, InfNet, InfNetOutput, Res2Net

__all__ = ["InfNet", "InfNetOutput", "INFNET_LIGHT", "Res2Net"]
