"""Layers as graphs: the graph, its formula and file forms, the seeds, code generation, model swaps.

- :mod:`.graph`: :class:`LayerGraph`, a DAG of :class:`Node` records over :mod:`primitives` ops.
- :mod:`.formula`: formula text to graph; :mod:`.graph_io`: the YAML graph file format.
- :mod:`.seeds`: the hand-designed layers (BN-ReLU, GN, EvoNorm, Proxy Norm...) as formulas.
- :mod:`.codegen`: graph to ``nn.Module`` source (the compiled and the exported layer are one text);
  :mod:`.lowering`: the pass that plans its fused kernels, ReLUs and unguarded divisions.
- :mod:`.create`: one factory from any SOURCE (seed name, formula, file, graph, class) to a layer.
- :mod:`.swap`: put a layer into the norm-act slots of an existing model;
  :mod:`.norm_without_act`: what fills a norm no activation follows (one vocabulary, one ChannelAffine).

Importing the graph side (graph, formula, graph_io, seeds) does not import torch.
"""
