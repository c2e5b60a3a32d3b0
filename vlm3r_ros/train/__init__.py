"""Training side: synthetic RGB-D sequence datasets and the trainers (no rclpy here).

Data flows ``scene_sampling`` (varied rooms, lights, cameras, paths) -> ``dataset``
(rendered Arrow shards, ``vlm3r-dataset``) -> ``geometry_data`` (view sequences as
tensors) -> ``train_geometry`` (CUT3R's objective, ``vlm3r-train-geometry``) ->
``eval_geometry`` (held-out depth/pose/coverage/route metrics, ``vlm3r-eval-geometry``).
"""
