from .classes import CLASS_NAMES, InfNetClasses, class_maps
from .infnet import INFNET_LIGHT, InfNet, InfNetOutput
from .mim import MaskedImageModel
from .res2net import RES2NET_LAYERS, Res2Net, Res2NetBottleneck, res2net50_v1b_26w_4s

__all__ = [
    "CLASS_NAMES",
    "InfNetClasses",
    "class_maps",
    "InfNet",
    "InfNetOutput",
    "MaskedImageModel",
    "INFNET_LIGHT",
    "Res2Net",
    "Res2NetBottleneck",
    "res2net50_v1b_26w_4s",
    "RES2NET_LAYERS",
]
