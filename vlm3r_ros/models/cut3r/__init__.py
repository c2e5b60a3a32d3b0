"""CUT3R streaming geometry encoder (PyTorch and ONNX Runtime backends).

Public API (import from the submodules; nothing heavy is imported here):

* ``config.Cut3rConfig`` -- ``official_512_dpt()``, ``official_224_linear()``, ``tiny()``.
* ``model.Cut3rModel`` -- the network with the official parameter names; ``step()``.
* ``checkpoint.load_cut3r``, ``checkpoint.save_official_layout``,
  ``checkpoint.CheckpointError``.
* ``stream.Cut3rStream``, ``stream.FrameGeometry``, ``stream.GeometryEncoder``.
* ``onnx_backend.export_onnx``, ``onnx_backend.OnnxCut3rStream``.
"""
