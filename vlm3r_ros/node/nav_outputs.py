"""The node's outputs for a navigation stack, and its input-clock hygiene.

:class:`NavOutputs` is created at configure (publishers, a timer in its own callback group)
and destroyed at cleanup/shutdown; each output is optional by parameter, in ``map_frame``
and stamped with the frames' own time (so ``use_sim_time`` and bag replay line up):

* ``~/odometry`` (``nav_msgs/Odometry``, ``publish_odometry``): the pose of every frame the
  geometry worker processed, published from that worker as it finishes the frame;
* ``~/cloud`` (``sensor_msgs/PointCloud2`` xyz + rgb, latched, ``publish_cloud``): the
  voxelised reconstruction of the buffered frames, at most ``cloud_max_points`` points,
  at most every ``cloud_period_s`` and only when it changed;
* ``~/free_space`` (``nav_msgs/OccupancyGrid``, latched, ``publish_free_space``): see
  :mod:`vlm3r_ros.planning.occupancy`, on the same timer.

:class:`InputClock` drops frames older than ``max_input_age_s`` by the node clock and
reports how far frame stamps are from it (SceneStatus fields and an 'input clock'
diagnostic).
"""
from __future__ import annotations

from typing import Any

from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from vlm3r_ros.node.nav_convert import clock_status, cloud_msg, grid_msg, odometry_msg
from vlm3r_ros.node.ros_convert import ns_to_stamp, stamp_to_ns
from vlm3r_ros.pipeline.input_age import StampAgeGate
from vlm3r_ros.pipeline.reconstruction import GeometryEvent
from vlm3r_ros.planning.occupancy import GridSettings, build_grid

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)


class NavOutputs:
    """Odometry, cloud and free-space publishers of one configured node."""

    def __init__(self, node: Any, config: Any, engine: Any) -> None:
        """Create the enabled publishers on ``node`` and hook into ``engine``."""
        self._node, self._config, self._engine = node, config, engine
        self._odom_pub = self._cloud_pub = self._grid_pub = None
        self._timer = None
        self._previous: GeometryEvent | None = None
        self._published_version = -1
        self.child_frame = config.odometry_child_frame or 'camera'
        if config.publish_odometry:
            self._odom_pub = node.create_publisher(Odometry, '~/odometry', 50)
            engine.on_geometry = self._on_geometry
        if config.publish_cloud:
            self._cloud_pub = node.create_publisher(PointCloud2, '~/cloud', LATCHED)
        if config.publish_free_space:
            self._grid_pub = node.create_publisher(OccupancyGrid, '~/free_space', LATCHED)
        if self._cloud_pub is not None or self._grid_pub is not None:
            self._timer = node.create_timer(config.cloud_period_s, self.publish_map,
                                            callback_group=MutuallyExclusiveCallbackGroup())

    def camera_frame(self, frame_id: str) -> None:
        """Use an image's frame_id as the odometry child frame (unless set by parameter)."""
        if not self._config.odometry_child_frame and frame_id:
            self.child_frame = frame_id

    def _on_geometry(self, event: GeometryEvent) -> None:
        """Publish one frame's odometry (runs on the geometry worker thread)."""
        pub, cfg = self._odom_pub, self._config
        if pub is None:
            return
        previous = self._previous
        if previous is not None and event.stamp_ns <= previous.stamp_ns:
            previous = None  # stamps went back (reset): no velocity across it
        self._previous = event
        pub.publish(odometry_msg(event, previous, cfg.map_frame, self.child_frame,
                                 cfg.odometry_position_sigma_m, cfg.odometry_rotation_sigma_rad))

    def publish_map(self) -> None:
        """Publish the cloud and the grid when the reconstruction changed (timer)."""
        engine, cfg = self._engine, self._config
        version = engine.cloud.version
        if version == self._published_version:
            return
        self._published_version = version
        cloud = engine.cloud.snapshot(cfg.cloud_max_points)
        if cloud.stamp_ns == 0:
            return  # nothing reconstructed yet
        if self._cloud_pub is not None:
            self._cloud_pub.publish(cloud_msg(cloud, cfg.map_frame))
        if self._grid_pub is not None:
            nodes, edges, plane = engine.traversed_segments()
            grid = build_grid(cloud.xyz, cloud.hits, nodes, edges, plane, GridSettings(
                resolution_m=cfg.free_space_resolution_m,
                robot_radius_m=cfg.free_space_robot_radius_m,
                obstacle_min_height_m=cfg.free_space_obstacle_min_height_m,
                obstacle_max_height_m=cfg.free_space_obstacle_max_height_m,
                min_hits=cfg.free_space_min_hits,
                camera_height_m=cfg.free_space_camera_height_m,
                max_cells=cfg.free_space_max_cells))
            if grid is not None:
                self._grid_pub.publish(grid_msg(grid, cfg.map_frame,
                                                ns_to_stamp(cloud.stamp_ns)))

    def destroy(self) -> None:
        """Unhook from the engine and destroy the timer and publishers."""
        if self._engine is not None and self._engine.on_geometry == self._on_geometry:
            self._engine.on_geometry = None
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
        for pub in (self._odom_pub, self._cloud_pub, self._grid_pub):
            if pub is not None:
                self._node.destroy_publisher(pub)
        self._timer = self._odom_pub = self._cloud_pub = self._grid_pub = None


class InputClock:
    """Frame stamps against the node clock: drop too-old frames, report the offset."""

    def __init__(self, node: Any) -> None:
        """Watch frames arriving at ``node`` (a Vlm3rNode)."""
        self._node = node
        self.gate = StampAgeGate()

    def admit(self, header: Any) -> bool:
        """Return False for a frame older than max_input_age_s (counted); see module."""
        cfg = self._node.config
        if cfg is not None:  # live parameters: read at every frame
            self.gate.max_age_s, self.gate.skew_warn_s = cfg.max_input_age_s, \
                cfg.stamp_skew_warn_s
        now_ns = self._node.get_clock().now().nanoseconds
        return self.gate.admit(stamp_to_ns(header.stamp), now_ns)

    def sim_time(self) -> bool:
        """Return True when the node runs on /clock (use_sim_time)."""
        return bool(self._node.get_parameter('use_sim_time').value)

    def diagnostic(self, node_name: str) -> Any:
        """Return the 'input clock' DiagnosticStatus."""
        return clock_status(self.gate.report(self.sim_time()), node_name)
