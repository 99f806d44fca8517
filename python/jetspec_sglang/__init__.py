"""JetSpec speculative decoding: a one-pass draft head, best-first trees, lossless tree verify.

The core (this package minus ``jetspec_sglang.sglang``) needs only torch and
transformers; the SGLang plugin is loaded by SGLang through its plugin entry point.
"""

from .draft_head import DraftHead as DraftHead
from .draft_head import per_depth_topk as per_depth_topk
from .head_config import DraftHeadConfig as DraftHeadConfig
from .head_config import default_target_layer_ids as default_target_layer_ids
from .ref_engine import GenerationResult as GenerationResult
from .ref_engine import speculative_generate as speculative_generate
from .ref_engine import target_generate as target_generate
from .tree import DraftTree as DraftTree
from .tree import FanoutCap as FanoutCap
from .tree import build_tree as build_tree
from .tree_layout import TreeMaskMode as TreeMaskMode
from .tree_layout import VerifyInputs as VerifyInputs
from .tree_layout import ancestor_mask as ancestor_mask
from .tree_layout import eagle_layout as eagle_layout
from .tree_layout import eagle_verify_inputs as eagle_verify_inputs
from .tree_layout import pack_mask as pack_mask
from .tree_layout import verify_mask as verify_mask
from .verify import SamplingConfig as SamplingConfig
from .verify import accept_tree as accept_tree

__version__ = "0.1.0"

__all__ = [
    "DraftHead",
    "DraftHeadConfig",
    "DraftTree",
    "FanoutCap",
    "GenerationResult",
    "SamplingConfig",
    "TreeMaskMode",
    "VerifyInputs",
    "accept_tree",
    "ancestor_mask",
    "build_tree",
    "default_target_layer_ids",
    "eagle_layout",
    "eagle_verify_inputs",
    "pack_mask",
    "per_depth_topk",
    "speculative_generate",
    "target_generate",
    "verify_mask",
]
