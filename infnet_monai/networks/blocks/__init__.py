from .infnet_blocks import ConvBlock, EdgeAttention, PartialDecoder, ReceptiveFieldBlock, ReverseAttention, resize_to

__all__ = ["ConvBlock", "EdgeAttention", "PartialDecoder", "ReceptiveFieldBlock", "ReverseAttention", "resize_to"]
