"""Use a discovered layer in an existing model: :func:`swap_norm_act` replaces every BatchNorm2d that
feeds an activation (ReLU, ReLU6, SiLU, Hardswish, GELU, ...) by the layer, and that activation by
``nn.Identity``, leaving every other module as it was.

Which activation follows which BatchNorm is read from the data flow, not from the order of modules:
the model is traced with ``torch.fx`` (BatchNorms and activations kept as leaf calls), and a pair is
a BatchNorm whose output goes only into one activation call (an ``nn.Identity`` between them, such as
timm's unused ``drop_block``, is looked through). Module order would be wrong for ResNets:
torchvision's BasicBlock and Bottleneck call one shared ``self.relu`` after ``bn1``, after ``bn2``
and after the residual add; timm's blocks place ``act2`` / ``act3`` after the add, which module order
shows as following ``bn2`` / ``bn3``.

A shared activation with other uses (torchvision's ``relu``) cannot simply become ``nn.Identity``:
its owner (the block) is re-traced and becomes an ``fx.GraphModule`` of the same class name and the
same submodule paths (so ``state_dict`` keys do not change), whose forward skips the activation right
after the replaced BatchNorms and still applies it after the residual add.

A BatchNorm not followed by an activation — the last of a bottleneck, before the residual add, a
downsample shortcut, MobileNet's linear bottleneck — is filled as ``norm_without_act`` says, in the
vocabulary of :mod:`evosearch.layers.norm_without_act`:

- ``"batchnorm"`` (default): the model's BatchNorm, left as it is. The searched layers replace a
  normalization *with* its activation; putting one where the architecture has none adds a
  nonlinearity (before the residual add, or in a linear bottleneck), and dropping the normalization
  changes the training dynamics. Keeping the BatchNorm is the least change and keeps pretrained
  statistics usable; note it keeps the model batch-dependent even where the layer is not.
- ``"affine"``: a per-channel affine (``ChannelAffine``) — EvoNorm's convention for ResNets trained
  from scratch, where the normalization of the branch is left to the layers before it.
- ``"layer"``: the layer there too.

Transformers. A layer for the token layout (``graph.layout == Layout.TOKENS``, input ``(..., C)``)
replaces the model's norms over the last dimension instead: every ``nn.LayerNorm`` and ``nn.RMSNorm``
(and timm's ``LayerNorm``, ``RmsNorm``, ``SimpleNorm``, as in its ViTs, their ``q_norm`` / ``k_norm``
with ``qk_norm=True`` included) whose ``normalized_shape`` is one dimension. A transformer's norm has
no activation after it, so none is removed: the layer takes the norm's place and nothing else changes.
A subclass of those norms is kept (timm's ``LayerNorm2d`` permutes NCHW to normalize the channels), as
is a norm over several dimensions; ``nn.Identity`` placeholders (timm's ``norm_pre``, ``fc_norm``) are
not norms at all. Torch's fused inference path of ``nn.TransformerEncoderLayer`` passes ``norm1`` and
``norm2``'s weight, bias and eps to one LayerNorm kernel instead of calling them, so a swap turns it off
for those layers (and ``nn.TransformerEncoder``'s nested-tensor path, which leads into it).

A slot takes one layout: an image layer (BatchNorm slots) offered to a transformer, or a token layer
offered to a CNN, is one :class:`LayoutError` before anything in the model changes.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import fx, nn

from evosearch.errors import EvosearchError, LayoutError
from evosearch.layers.create import LayerFactory, LayerSource, layer_factory, resolve_layer
from evosearch.layers.graph import LayerGraph
from evosearch.layers.norm_without_act import NormWithoutAct, norm_without_act_factory, parse_norm_without_act
from evosearch.text import table
from primitives import Layout

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.Hardswish,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Mish,
    nn.PReLU,
)
PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Identity,)
TOKEN_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.RMSNorm)
# timm's norms over the last dimension, taken from timm where a model has loaded it (evosearch does not
# depend on timm); its *2d variants normalize the channels of NCHW and are not token slots.
_TIMM_TOKEN_NORMS = ("LayerNorm", "LayerNormFp32", "RmsNorm", "RmsNormFp32", "SimpleNorm", "SimpleNormFp32")
_SLOT_KINDS = {Layout.IMAGE: "image slots", Layout.TOKENS: "token norm slots"}


@dataclass
class SwapEntry:
    """One norm: what it was (with its activation, if any), and what it became."""

    module: str
    activation: str | None
    replaced: str
    became: str  # the new module, or "kept"
    copied: list[str] = field(default_factory=list)  # state carried over from the BatchNorm
    note: str = ""

    @property
    def kind(self) -> str:
        if self.became == "kept":
            return "kept"
        return "norm_act" if self.activation else "norm_only"


@dataclass
class SwapReport:
    layout: Layout  # the slots swapped: image (BatchNorm + activation) or tokens (LayerNorm, RMSNorm)
    entries: list[SwapEntry]
    untied: list[str] = field(default_factory=list)  # re-traced so that a shared activation is skipped
    fast_path_off: list[str] = field(default_factory=list)  # torch's fused inference path turned off

    @property
    def counts(self) -> dict[str, int]:
        counts = {"norm_act": 0, "norm_only": 0, "kept": 0}
        for entry in self.entries:
            counts[entry.kind] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": str(self.layout),
            "entries": [asdict(e) for e in self.entries],
            "untied": self.untied,
            "fast_path_off": self.fast_path_off,
            "counts": self.counts,
        }

    def __str__(self) -> str:
        rows = [asdict(e) for e in self.entries]
        columns = ["module", "activation", "replaced", "became", "note"]
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        untied = f"; shared activations untied in {len(self.untied)} modules" if self.untied else ""
        fast = (
            f"; fused inference path off in {len(self.fast_path_off)} modules" if self.fast_path_off else ""
        )
        return f"{table(rows, columns)}\n{counts}{untied}{fast}"


def swap_norm_act(
    model: nn.Module,
    layer: LayerSource,
    *,
    norm_without_act: NormWithoutAct = "batchnorm",
    copy_state: bool = True,
    layout: Layout | str | None = None,
) -> SwapReport:
    """Replace ``model``'s norm slots by ``layer`` in place (see the module docstring): a CNN's
    BatchNorm2d + activation pairs for an image layer, a transformer's LayerNorms and RMSNorms for a
    token layer. ``layer`` is a SOURCE: a seed name, a formula, a graph file, a ``LayerGraph`` or a
    module class (see :mod:`evosearch.layers.create`).

    ``layout`` says which slots, where the layer does not: a module class (taken as it is) or a formula
    (parsed in that layout) offered to a model with both kinds; otherwise the model's one kind, or the
    graph's. ``norm_without_act`` concerns image slots only: in a transformer every norm is a slot.
    With ``copy_state`` a new module takes the old norm's tensors whose names and shapes it shares
    (``weight``, ``bias``, ``running_mean``, ``running_var``): the affine and running statistics of
    the input mean the same in a compiled layer, so a pretrained model keeps them. The layer keeps its
    own ``eps``: a hyperparameter of the layer, not state of the model."""
    norm_without_act = parse_norm_without_act(norm_without_act)
    slots = _slot_kinds(model)
    layout = _chosen_layout(model, slots, layer, layout)
    try:
        factory = layer_factory(layer, layout=layout)
    except LayoutError as e:
        raise LayoutError(f"{_described_slots(model, slots)}: {e}") from None
    if layout is Layout.TOKENS:
        return _swap_token_norms(model, factory, copy_state)
    plan = _plan(model)
    untied = _untie(model, plan)
    entries = [_replace(model, norm, plan, factory, norm_without_act, copy_state) for norm in plan.norms]
    for activation in plan.activations_to_remove():
        _set_module(model, activation, nn.Identity())
    return SwapReport(Layout.IMAGE, entries, untied)


# ---- which slots: the model's kinds and the layer's layout --------------------------------------


def token_norm_classes() -> tuple[type[nn.Module], ...]:
    """The norm classes known to normalize the last dimension: torch's, and timm's where it is loaded
    (a timm model has imported it)."""
    timm_norm = sys.modules.get("timm.layers.norm")
    found = [getattr(timm_norm, name, None) for name in _TIMM_TOKEN_NORMS] if timm_norm else []
    return TOKEN_NORMS + tuple(cls for cls in found if cls is not None)


def _slot_kinds(model: nn.Module) -> dict[Layout, list[str]]:
    """The layouts ``model`` has slots for, each with the class names of its norms there."""
    token_norms = token_norm_classes()
    kinds: dict[Layout, set[str]] = {}
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            kinds.setdefault(Layout.IMAGE, set()).add(type(module).__name__)
        elif isinstance(module, token_norms):
            kinds.setdefault(Layout.TOKENS, set()).add(type(module).__name__)
    return {layout: sorted(names) for layout, names in kinds.items()}


def _chosen_layout(
    model: nn.Module, slots: dict[Layout, list[str]], layer: LayerSource, layout: Layout | str | None
) -> Layout:
    """The layout whose slots are swapped: as asked, else the model's one kind, else the graph's."""
    if layout is not None:
        chosen = _as_layout(layout)
        if slots and chosen not in slots:
            raise LayoutError(f"{_described_slots(model, slots)} and none for the {chosen} layout")
        return chosen
    if len(slots) == 1:
        return next(iter(slots))
    resolved = resolve_layer(layer)
    if isinstance(resolved, LayerGraph):
        return resolved.layout
    if slots:
        raise LayoutError(f"{_described_slots(model, slots)}: pass layout='image' or 'tokens' for this layer")
    return Layout.IMAGE  # nothing to swap: the report says so


def _as_layout(value: Layout | str) -> Layout:
    try:
        return Layout.parse(value)
    except ValueError as e:
        raise LayoutError(str(e)) from None


def _described_slots(model: nn.Module, slots: dict[Layout, list[str]]) -> str:
    kinds = " and ".join(f"{_SLOT_KINDS[layout]} ({', '.join(names)})" for layout, names in slots.items())
    return f"{type(model).__name__} has {kinds or 'no norm slots'}"


# ---- the plan: pairs from the data flow ---------------------------------------------------------


class _Tracer(fx.Tracer):
    """BatchNorms, activations and identities stay calls in the graph, wherever they are defined."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, (nn.BatchNorm2d, *ACTIVATIONS, *PASS_THROUGH)) or super().is_leaf_module(
            m, qualified_name
        )


def _trace(module: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(module)
    except Exception as e:  # fx refuses data-dependent control flow and some Python constructs
        raise EvosearchError(
            f"cannot trace {type(module).__name__} with torch.fx ({type(e).__name__}: {e}); "
            "swap_norm_act reads from the traced data flow which activation follows which BatchNorm"
        ) from None


def _module_calls(graph: fx.Graph) -> dict[str, list[fx.Node]]:
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    return calls


@dataclass
class _Plan:
    norms: list[str]  # every BatchNorm2d, in model order
    modules: dict[str, nn.Module]
    calls: dict[str, list[fx.Node]]
    pairs: dict[str, fx.Node] = field(default_factory=dict)  # BatchNorm path -> its activation call
    notes: dict[str, str] = field(default_factory=dict)  # BatchNorm path -> why it is not paired

    def covered(self, activation: str) -> list[int]:
        """The activation's calls (by index) that follow a paired BatchNorm."""
        paired = set(self.pairs.values())
        return [i for i, node in enumerate(self.calls.get(activation, [])) if node in paired]

    def shared(self) -> dict[str, list[int]]:
        """Paired activations with other uses too: activation path -> covered call indices."""
        targets = {node.target for node in self.pairs.values()}
        out = {}
        for target in sorted(targets):
            covered = self.covered(target)
            if len(covered) < len(self.calls[target]):
                out[target] = covered
        return out

    def activations_to_remove(self) -> list[str]:
        targets = sorted({node.target for node in self.pairs.values()})
        return [t for t in targets if len(self.covered(t)) == len(self.calls[t])]

    def unpair(self, activation: str, note: str) -> None:
        for norm, node in list(self.pairs.items()):
            if node.target == activation:
                del self.pairs[norm]
                self.notes[norm] = note


def _plan(model: nn.Module) -> _Plan:
    graph = _trace(model)
    modules = dict(model.named_modules())
    plan = _Plan(
        norms=[name for name, m in modules.items() if isinstance(m, nn.BatchNorm2d)],
        modules=modules,
        calls=_module_calls(graph),
    )
    for norm in plan.norms:
        calls = plan.calls.get(norm, [])
        if len(calls) != 1:
            plan.notes[norm] = "never called in forward" if not calls else f"called {len(calls)} times"
            continue
        activation = _following_activation(calls[0], modules)
        if activation is None:
            plan.notes[norm] = "no activation follows"
        else:
            plan.pairs[norm] = activation
    return plan


def _following_activation(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The activation call that alone reads ``node``'s output, through identities; else None."""
    while len(node.users) == 1:
        (user,) = node.users
        if user.op != "call_module":
            return None
        module = modules[user.target]
        if isinstance(module, ACTIVATIONS):
            return user
        if not isinstance(module, PASS_THROUGH):
            return None
        node = user
    return None


# ---- untying shared activations -----------------------------------------------------------------


def _untie(model: nn.Module, plan: _Plan) -> list[str]:
    """Re-trace each owner of a shared activation without the covered calls; the re-traced module
    takes the owner's place. Deeper owners first, so that an outer re-trace sees the inner one."""
    by_owner: dict[str, dict[str, list[int]]] = {}
    for activation, covered in plan.shared().items():
        owner, _, name = activation.rpartition(".")
        if not owner:
            plan.unpair(activation, f"{activation} is shared with other uses in the root module: kept")
            continue
        by_owner.setdefault(owner, {})[name] = covered
    untied = []
    for owner in sorted(by_owner, key=lambda o: -o.count(".")):
        module = model.get_submodule(owner)
        graph = _trace(module)
        calls = _module_calls(graph)
        erased = 0
        for name, covered in by_owner[owner].items():
            if len(calls.get(name, [])) != len(plan.calls[f"{owner}.{name}"]):
                # the owner runs more than once, or others call its activation: no local rewrite
                plan.unpair(f"{owner}.{name}", f"{owner}.{name} is shared beyond {owner}: kept")
                continue
            for i in covered:
                node = calls[name][i]
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
                erased += 1
        if not erased:
            continue
        graph.lint()
        _set_module(model, owner, _rewritten(module, graph))
        untied.append(owner)
    return untied


def _rewritten(module: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """``module`` with ``graph`` as its forward, otherwise as it was: the same children in the same
    order (fx alone would keep only those the graph calls, ``downsample`` as a bare container) and
    the same plain attributes (``stride``), so code that reads them still works."""
    rewritten = fx.GraphModule(module, graph, class_name=type(module).__name__)
    for name in [name for name, _ in rewritten.named_children()]:
        delattr(rewritten, name)
    for name, child in module.named_children():
        rewritten.add_module(name, child)
    for key, value in vars(module).items():
        if not key.startswith("_") and not hasattr(rewritten, key):
            setattr(rewritten, key, value)
    rewritten.training = module.training
    return rewritten


# ---- replacing ----------------------------------------------------------------------------------


def _replace(
    model: nn.Module,
    norm: str,
    plan: _Plan,
    factory: LayerFactory,
    norm_without_act: NormWithoutAct,
    copy_state: bool,
) -> SwapEntry:
    bn = plan.modules[norm]
    activation = plan.pairs.get(norm)
    described = f"{type(bn).__name__}({bn.num_features})"
    if activation is not None:
        act = plan.modules[activation.target]
        shared = len(plan.covered(activation.target)) < len(plan.calls[activation.target])
        note = "shared activation: kept for its other uses" if shared else ""
        entry = SwapEntry(norm, activation.target, f"{described} + {type(act).__name__}", "", note=note)
        new = factory(bn.num_features)
    else:
        entry = SwapEntry(norm, None, described, "kept", note=plan.notes.get(norm, ""))
        if norm_without_act == "batchnorm" or norm not in plan.calls:
            return entry
        new = norm_without_act_factory(norm_without_act, factory)(bn.num_features)
    new = _placed(new, bn)
    if copy_state:
        entry.copied = _copy_state(bn, new)
    _set_module(model, norm, new)
    entry.became = f"{type(new).__name__}({bn.num_features})"
    return entry


# ---- transformers: token norms ------------------------------------------------------------------


def _swap_token_norms(model: nn.Module, factory: LayerFactory, copy_state: bool) -> SwapReport:
    """Every token norm slot gets its own layer; the new layers are all built before the first one is
    set, so that a layer failing to build leaves the model as it was."""
    entries, new_modules = [], {}
    slot_classes = token_norm_classes()
    for path, norm in model.named_modules():
        if not isinstance(norm, slot_classes):
            continue
        described = f"{type(norm).__name__}({', '.join(map(str, norm.normalized_shape))})"
        reason = _not_a_token_slot(norm, slot_classes)
        if reason:
            entries.append(SwapEntry(path, None, described, "kept", note=reason))
            continue
        new = _placed(factory(norm.normalized_shape[0]), norm)
        copied = _copy_state(norm, new) if copy_state else []
        entries.append(
            SwapEntry(path, None, described, f"{type(new).__name__}({norm.normalized_shape[0]})", copied)
        )
        new_modules[path] = new
    for path, new in new_modules.items():
        _set_module(model, path, new)
    return SwapReport(Layout.TOKENS, entries, fast_path_off=_fused_paths_off(model))


def _not_a_token_slot(norm: nn.Module, slot_classes: tuple[type[nn.Module], ...]) -> str:
    """Why a LayerNorm or RMSNorm is kept, or "" for a slot."""
    if type(norm) not in slot_classes:
        return f"a subclass of {type(norm).__mro__[1].__name__} may normalize another dimension"
    if len(norm.normalized_shape) != 1:
        return f"normalizes the last {len(norm.normalized_shape)} dimensions"
    return ""


def _fused_paths_off(model: nn.Module) -> list[str]:
    """Turn off torch's fused inference path where it would skip a swapped norm.

    In eval mode without gradients ``nn.TransformerEncoderLayer`` calls one kernel with ``norm1`` and
    ``norm2``'s ``weight``, ``bias`` and ``eps`` as LayerNorm's instead of calling the modules: a new
    layer would silently compute LayerNorm, or fail on an attribute it lacks. Its
    ``activation_relu_or_gelu`` is the kernel's activation code and only read on that path; 0 (no
    fused activation) sends ``forward`` through the modules, before any norm attribute is read.
    ``nn.TransformerEncoder``'s nested-tensor path reads the first layer's norms the same way; its
    ``use_nested_tensor`` switches it off."""
    off = []
    for path, module in model.named_modules():
        if isinstance(module, nn.TransformerEncoderLayer) and module.activation_relu_or_gelu:
            if not _norms_swapped(module):
                continue
            module.activation_relu_or_gelu = 0
        elif isinstance(module, nn.TransformerEncoder) and module.use_nested_tensor:
            if not any(_norms_swapped(layer) for layer in module.layers):
                continue
            module.use_nested_tensor = False
        else:
            continue
        off.append(path)
    return off


def _norms_swapped(layer: nn.TransformerEncoderLayer) -> bool:
    """Whether the layer's norms are no longer the LayerNorms its fused kernel computes."""
    return not all(type(norm) is nn.LayerNorm for norm in (layer.norm1, layer.norm2))


# ---- shared by both kinds of slot ---------------------------------------------------------------


def _placed(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` on ``old``'s device and dtype, in its training mode."""
    reference = next(itertools.chain(old.parameters(), old.buffers()), None)
    if reference is not None:
        new = new.to(device=reference.device, dtype=reference.dtype)
    return new.train(old.training)


def _copy_state(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy the tensors whose names and shapes both modules have; their names."""
    theirs, ours = source.state_dict(), target.state_dict()
    copied = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape]
    target.load_state_dict({**ours, **{k: theirs[k] for k in copied}})
    return copied


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)
