"""The TorchScript operations a served model may use: a reviewed allowlist.

Every name here is an operation on tensors (or on the ints, floats, strings, lists and
tuples TorchScript uses to shape them) whose only effect is its result, or an in-place
write into a tensor the program already holds. Nothing here opens a file, touches a
storage by name, talks to another process, or changes state other models in the same
process see. An operation missing from this list is refused with its name; add one only
after reading what it does (its schema in ``torch._C._jit_get_all_schemas()``), with the
category it belongs to.

In-place variants (``relu_``, ``add_``) are allowed with their base operation: they write
into their first argument, which the program already holds.
"""

from __future__ import annotations


def _ns(namespace: str, names: str) -> frozenset[str]:
    return frozenset(f"{namespace}::{n}" for n in names.split())


# TorchScript's own plumbing: constants, containers, attributes of the module's own
# submodules and values, control flow, and type queries. CallMethod/CallFunction are
# absent on purpose: calls are inlined before the walk, and what is left is checked apart.
STRUCTURAL = _ns("prim", """
    Constant ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex TupleSlice
    DictConstruct DictIndex GetAttr SetAttr If Loop NumToTensor ImplicitTensorToNum
    dtype device layout shape data unchecked_cast unchecked_unwrap_optional RaiseException
    Uninitialized isinstance type is_nested requires_grad is_cuda is_cpu is_xpu is_mps
    is_sparse is_mkldnn is_quantized is_meta is_vulkan is_ipu is_maia min max abs
    ModuleContainerIndex tolist AutogradZero AutogradAdd BroadcastSizes ConstantChunk
    StringIndex rangelist
""")

# The list, dict, string and number builtins TorchScript emits for Python syntax
# (len(x), x[i], "..".format(), int(t), ...) and the queries it makes of tensors.
BUILTINS = _ns("aten", """
    len __getitem__ _set_item append extend insert pop remove clear copy reverse sort sorted
    list dict keys values items get setdefault __contains__ __is__ __isnot__ __not__
    __and__ __or__ __xor__ __lshift__ __rshift__ __iand__ __ior__ __ixor__ __ilshift__
    __irshift__ __range_length __derive_index __round_to_zero_floordiv Delete
    format join split strip lstrip rstrip startswith endswith lower upper replace find
    count splitlines isdigit isalpha isspace str ord chr hex oct bin hash
    Int Float Bool Complex ScalarImplicit IntImplicit FloatImplicit ComplexImplicit
    size sym_size dim numel sym_numel item element_size get_device is_floating_point
    is_complex is_contiguous is_nonzero is_same_size is_grad_enabled is_autocast_enabled
    is_autocast_cpu_enabled is_scripting divmod floordiv
    warn
""")
# aten::warn: a Python warning in the worker's log, which the nn layers emit themselves
# (MultiheadAttention does); prim::Print is refused below, since nothing of it is needed.

ARITHMETIC = _ns("aten", """
    add sub rsub mul div true_divide floor_divide remainder fmod neg negative abs absolute
    pow float_power sqrt rsqrt exp exp2 expm1 log log2 log10 log1p sin cos tan asin acos atan
    atan2 arctan2 sinh cosh tanh asinh acosh atanh erf erfc erfinv sign sgn signbit reciprocal
    square floor ceil round trunc fix frac clamp clamp_min clamp_max clip lerp addcmul addcdiv
    hypot logaddexp logaddexp2 xlogy nan_to_num positive copysign digamma lgamma logit i0
    sinc deg2rad rad2deg real imag conj angle gcd lcm
    bitwise_and bitwise_or bitwise_xor bitwise_not bitwise_left_shift bitwise_right_shift
    logical_and logical_or logical_xor logical_not
""")

LINEAR_ALGEBRA = _ns("aten", """
    matmul mm bmm addmm addbmm baddbmm addmv addr mv dot vdot outer ger einsum tensordot
    bilinear cross linalg_cross kron chain_matmul linalg_vector_norm linalg_matrix_norm
    linalg_norm norm frobenius_norm nuclear_norm cdist pdist tril triu diag diagonal
    diag_embed diagflat trace
""")

COMPARISON = _ns("aten", """
    eq ne lt le gt ge equal isclose allclose isnan isinf isfinite isneginf isposinf isreal
    maximum minimum fmax fmin where masked_fill masked_select masked_scatter sort argsort
    topk kthvalue msort unique_consecutive unique_dim _unique _unique2 searchsorted
    bucketize
""")

REDUCTION = _ns("aten", """
    sum mean prod max min amax amin aminmax argmax argmin std var std_mean var_mean median
    nanmedian mode logsumexp cumsum cumprod cummax cummin logcumsumexp all any count_nonzero
    nansum nanmean renorm quantile nanquantile histc bincount
""")

SHAPE_AND_INDEXING = _ns("aten", """
    view view_as reshape reshape_as _reshape_alias _unsafe_view flatten unflatten squeeze
    unsqueeze permute transpose t numpy_T mT mH matrix_H adjoint contiguous expand expand_as
    repeat repeat_interleave tile cat concat concatenate stack hstack vstack dstack
    column_stack row_stack split split_with_sizes tensor_split hsplit vsplit dsplit chunk
    unbind narrow select slice index_select gather scatter scatter_add scatter_reduce index
    index_put index_add index_copy index_fill take take_along_dim flip fliplr flipud roll
    rot90 movedim moveaxis swapaxes swapdims broadcast_to broadcast_tensors meshgrid pad
    constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d
    replication_pad2d replication_pad3d circular_pad1d circular_pad2d circular_pad3d
    pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle unfold im2col col2im
    nonzero argwhere clone detach alias one_hot tril_indices triu_indices _shape_as_tensor
    _size_if_not_equal atleast_1d atleast_2d atleast_3d ravel
""")

# Creation fills every element it returns. torch.empty and its kin are absent: they hand
# out uninitialised memory, which in a shared process can still hold another tenant's
# tensors; zeros/full cost the same for a model that overwrites the result anyway.
CREATION = _ns("aten", """
    zeros zeros_like ones ones_like full full_like arange range linspace logspace eye tensor
    scalar_tensor as_tensor new_zeros new_ones new_full new_tensor zero fill copy
    rand randn randint rand_like randn_like randint_like randperm bernoulli multinomial
    normal uniform
""")

CONVERSION = _ns("aten", """
    to type_as float double half bfloat16 int long short char byte bool cpu cuda
    to_dense _autocast_to_reduced_precision _autocast_to_full_precision
""")

NEURAL_NETWORK = _ns("aten", """
    linear conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution
    _convolution conv_tbc batch_norm _batch_norm_impl_index native_batch_norm layer_norm
    native_layer_norm group_norm native_group_norm instance_norm rms_norm
    max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
    max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
    adaptive_max_pool3d _adaptive_avg_pool2d max_unpool2d max_unpool3d
    relu relu6 leaky_relu rrelu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh
    hardshrink softshrink tanhshrink threshold softplus softsign prelu _prelu_kernel glu
    log_sigmoid sigmoid softmax log_softmax _softmax _log_softmax
    dropout feature_dropout alpha_dropout feature_alpha_dropout
    embedding embedding_bag _embedding_bag embedding_renorm
    lstm gru rnn_tanh rnn_relu lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell
    _pack_padded_sequence _pad_packed_sequence pad_sequence
    scaled_dot_product_attention _scaled_dot_product_attention_math
    _native_multi_head_attention _transformer_encoder_layer_fwd _nested_tensor_from_mask
    _nested_tensor_from_mask_left_aligned to_padded_tensor _masked_softmax
    __interpolate __upsample __upsample_bilinear __upsample_nearest upsample_nearest1d
    upsample_nearest2d upsample_nearest3d upsample_linear1d upsample_bilinear2d
    upsample_bicubic2d upsample_trilinear3d _upsample_nearest_exact1d
    _upsample_nearest_exact2d _upsample_nearest_exact3d _upsample_bilinear2d_aa
    _upsample_bicubic2d_aa _upsample_lanczos2d_aa grid_sampler grid_sampler_2d affine_grid_generator
    cosine_similarity pairwise_distance normalize
    mse_loss l1_loss smooth_l1_loss huber_loss cross_entropy_loss nll_loss nll_loss2d
    nll_loss_nd binary_cross_entropy binary_cross_entropy_with_logits kl_div
""")

TENSOR_OPS = (ARITHMETIC | LINEAR_ALGEBRA | COMPARISON | REDUCTION | SHAPE_AND_INDEXING | CREATION
              | CONVERSION | NEURAL_NETWORK)
ALLOWED: frozenset[str] = (STRUCTURAL | BUILTINS | TENSOR_OPS
                           | frozenset(f"{op}_" for op in TENSOR_OPS if not op.endswith("__")))

# Why the operations a hostile model reaches for are refused, for the message.
_FILES = "reads or writes files"
REFUSED_WHY: dict[str, str] = {
    "aten::from_file": _FILES,
    "aten::save": _FILES,
    "aten::load": _FILES,
    "prim::Print": "writes to the worker's output (a side effect)",
    "prim::CreateObject": "creates an object of a TorchScript class",
    "prim::CallFunction": "calls a function that cannot be inlined and verified",
    "prim::PythonOp": "calls back into Python",
    "prim::IgnoredPythonOp": "calls back into Python",
    "prim::Enter": "enters a context manager",
    "prim::Exit": "leaves a context manager",
    "prim::id": "reads an object's address",
    "prim::rpc_async": "calls another process over the network",
    "prim::rpc_sync": "calls another process over the network",
    "prim::rpc_remote": "calls another process over the network",
    "prim::fork": "runs a subgraph on another thread, outside this walk",
    "aten::wait": "waits on a forked subgraph",
    "aten::manual_seed": "changes the random generator every model in the process shares",
    "aten::seed": "changes the random generator every model in the process shares",
    "aten::set_grad_enabled": "changes the autograd mode other models in the process run under",
    "aten::empty": "returns uninitialised memory (use zeros)",
    "aten::empty_like": "returns uninitialised memory (use zeros_like)",
    "aten::new_empty": "returns uninitialised memory (use new_zeros)",
    "aten::empty_strided": "returns uninitialised memory (use zeros)",
    "aten::resize_": "grows a tensor into uninitialised memory",
    "aten::set_": "points a tensor at another storage",
    "aten::as_strided": "reads a storage through arbitrary strides",
    "aten::share_memory_": "moves a tensor into memory shared with other processes",
}
assert not ALLOWED & REFUSED_WHY.keys(), "an operation cannot be both allowed and refused"
