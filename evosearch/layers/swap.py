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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import fx, nn

from evosearch.errors import EvosearchError
from evosearch.layers.create import LayerFactory, LayerSource, layer_factory
from evosearch.layers.norm_without_act import NormWithoutAct, norm_without_act_factory, parse_norm_without_act
from evosearch.text import table

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


@dataclass
class SwapEntry:
    """One BatchNorm: what it was (with its activation, if any), and what it became."""

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
    entries: list[SwapEntry]
    untied: list[str]  # modules re-traced so that a shared activation could be skipped where replaced

    @property
    def counts(self) -> dict[str, int]:
        counts = {"norm_act": 0, "norm_only": 0, "kept": 0}
        for entry in self.entries:
            counts[entry.kind] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"entries": [asdict(e) for e in self.entries], "untied": self.untied, "counts": self.counts}

    def __str__(self) -> str:
        rows = [asdict(e) for e in self.entries]
        columns = ["module", "activation", "replaced", "became", "note"]
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        untied = f"; shared activations untied in {len(self.untied)} modules" if self.untied else ""
        return f"{table(rows, columns)}\n{counts}{untied}"


def swap_norm_act(
    model: nn.Module,
    layer: LayerSource,
    *,
    norm_without_act: NormWithoutAct = "batchnorm",
    copy_state: bool = True,
) -> SwapReport:
    """Replace ``model``'s BatchNorm2d + activation pairs by ``layer`` in place (see the module
    docstring). ``layer`` is a SOURCE: a seed name, a formula, a graph file, a ``LayerGraph`` or a
    module class (see :mod:`evosearch.layers.create`). With ``copy_state`` a new module takes the
    BatchNorm's tensors whose names and shapes it shares (``weight``, ``bias``, ``running_mean``,
    ``running_var``): the affine and running statistics of the input mean the same in a compiled
    layer, so a pretrained model keeps them."""
    norm_without_act = parse_norm_without_act(norm_without_act)
    factory = layer_factory(layer)
    plan = _plan(model)
    untied = _untie(model, plan)
    entries = [_replace(model, norm, plan, factory, norm_without_act, copy_state) for norm in plan.norms]
    for activation in plan.activations_to_remove():
        _set_module(model, activation, nn.Identity())
    return SwapReport(entries, untied)


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
    reference = bn.weight if bn.weight is not None else bn.running_mean
    if reference is not None:
        new = new.to(device=reference.device, dtype=reference.dtype)
    new.train(bn.training)
    if copy_state:
        entry.copied = _copy_state(bn, new)
    _set_module(model, norm, new)
    entry.became = f"{type(new).__name__}({bn.num_features})"
    return entry


def _copy_state(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy the tensors whose names and shapes both modules have; their names."""
    theirs, ours = source.state_dict(), target.state_dict()
    copied = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape]
    target.load_state_dict({**ours, **{k: theirs[k] for k in copied}})
    return copied


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)
