from .nets import CLASS_NAMES, INFNET_LIGHT, InfNetClasses, class_maps, InfNet, InfNetOutput, MaskedImageModel, Res2Net

__all__ = ["CLASS_NAMES", "InfNetClasses", "class_maps", "InfNet", "InfNetOutput", "INFNET_LIGHT", "MaskedImageModel", "Res2Net"]
