#!/usr/bin/env bash
# Installs the ROS 2 tools that no package registry serves into a venv that has the ROS 2 wheels:
# ros2cli (ros2 param/topic/node/service/lifecycle/run/pkg/interface), launch + launch_ros with
# `ros2 launch`, rosidl_runtime_py, message_filters and sensor_msgs_py (pure Python on rclpy), the
# interface packages vision_msgs and composition_interfaces (built with CMake, like this project's own
# messages), and TF for Python from geometry2: the interfaces tf2_msgs, the C++ library tf2, its C
# extension tf2_py (all three built with CMake) and tf2_ros (tf2_ros_py, pure Python).
#
# Sources: the archives in $ROS2_SRC (default ../shared/ros2-src) when present, otherwise the same
# pinned upstream tags, cloned with git (a connected machine).
#
# Usage: install_ros2_tools.sh VENV BUILD_DIR [ROS_DISTRO]   (patches/ros2cli-<ROS_DISTRO>.patch, if any,
# adapts the Kilted-era ros2cli to that distribution's rclpy)
set -euo pipefail

venv="$(realpath "$1")"
build="$(realpath -m "$2")"
distro="${3:-jazzy}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
archives="${ROS2_SRC:-${here}/../../shared/ros2-src}"
python="${venv}/bin/python"

# name  repository  tag  folder inside the repository (. = all of it)
SOURCES="
ros2cli                https://github.com/ros2/ros2cli.git                 0.36.1 .
launch                 https://github.com/ros2/launch.git                  3.7.1  .
launch_ros             https://github.com/ros2/launch_ros.git              0.28.0 .
rosidl_runtime_py      https://github.com/ros2/rosidl_runtime_py.git       0.14.0 .
vision_msgs            https://github.com/ros-perception/vision_msgs.git   4.1.1  vision_msgs
composition_interfaces https://github.com/ros2/rcl_interfaces.git          2.2.0  composition_interfaces
message_filters        https://github.com/ros2/message_filters.git         6.0.6  .
sensor_msgs_py         https://github.com/ros2/common_interfaces.git       5.4.2  sensor_msgs_py
geometry2              https://github.com/ros2/geometry2.git               0.36.4 .
"
PYTHON_PACKAGES="rosidl_runtime_py ros2cli/ros2cli ros2cli/ros2node ros2cli/ros2service ros2cli/ros2param
  ros2cli/ros2topic ros2cli/ros2lifecycle ros2cli/ros2pkg ros2cli/ros2run ros2cli/ros2interface
  launch/launch launch/launch_xml launch/launch_yaml launch_ros/launch_ros launch_ros/ros2launch sensor_msgs_py
  geometry2/tf2_ros_py"
# built with CMake in this order (each finds the ones before it in the venv); tf2 needs BUILD_TESTING=OFF,
# its tests ask for ament_cmake_google_benchmark, which no registry serves
CMAKE_PACKAGES="composition_interfaces vision_msgs geometry2/tf2_msgs geometry2/tf2 geometry2/tf2_py"

src="${build}/src"
rm -rf "${src}" && mkdir -p "${src}"
while read -r name repository tag folder; do
  [ -n "${name}" ] || continue
  if [ -f "${archives}/${name}-${tag}.tar.gz" ]; then
    tar -xzf "${archives}/${name}-${tag}.tar.gz" -C "${src}"
  else
    echo "install_ros2_tools: ${archives}/${name}-${tag}.tar.gz not found, cloning ${repository} ${tag}"
    git clone --quiet --depth 1 --branch "${tag}" "${repository}" "${build}/clone-${name}"
    rm -rf "${build}/clone-${name}/.git"
    mv "${build}/clone-${name}/${folder}" "${src}/${name}"
    rm -rf "${build}/clone-${name}"
  fi
done <<< "${SOURCES}"
if [ -f "${here}/patches/ros2cli-${distro}.patch" ]; then
  patch --quiet -d "${src}/ros2cli" -p1 < "${here}/patches/ros2cli-${distro}.patch"
fi

# Logs go to files, shown when a step fails (setuptools is loud about these older setup.py files).
run_logged() {
  local log="$1"; shift
  "$@" > "${log}" 2>&1 || { cat "${log}"; echo "install_ros2_tools: failed: $*" >&2; return 1; }
}
run_logged "${build}/pip-requirements.log" "${python}" -m pip install -r "${here}/ros2-tools-requirements.txt"
run_logged "${build}/pip-tools.log" "${python}" -m pip install --no-deps --no-build-isolation \
  $(for package in ${PYTHON_PACKAGES}; do echo "${src}/${package}"; done)

# message_filters' setup.py is catkin's; its Python module is one pure-Python package, copied as it is.
site_packages="$("${python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "${site_packages}/message_filters"
cp -r "${src}/message_filters/src/message_filters" "${site_packages}/message_filters"
# and registered in the ament index, as its own install would register it (ros2 pkg list, package.xml checks)
mkdir -p "${venv}/share/ament_index/resource_index/packages" "${venv}/share/message_filters"
touch "${venv}/share/ament_index/resource_index/packages/message_filters"
cp "${src}/message_filters/package.xml" "${venv}/share/message_filters/package.xml"

"${python}" "${here}/fix_ament_paths.py" "${venv}"
for package in ${CMAKE_PACKAGES}; do
  name="${package##*/}"
  run_logged "${build}/${name}-configure.log" env AMENT_PREFIX_PATH="${venv}" CMAKE_PREFIX_PATH="${venv}" \
    cmake -S "${src}/${package}" -B "${build}/cmake-${name}" -Wno-dev -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="${venv}" -DPython3_EXECUTABLE="${python}" -DBUILD_TESTING=OFF
  run_logged "${build}/${name}-build.log" env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    cmake --build "${build}/cmake-${name}" -j "$(nproc)"
  run_logged "${build}/${name}-install.log" cmake --install "${build}/cmake-${name}"
done

# The venv is its own ROS prefix: every Python of it finds the packages installed there (ros2 launch
# clip_dinoiser_ros ..., ros2 run, ros2 interface) with no ROS installation and nothing to source.
cat > "${site_packages}/ament_prefix_venv.pth" <<'PTH'
import os, sys; _p = os.environ.get('AMENT_PREFIX_PATH', ''); sys.prefix in _p.split(os.pathsep) or os.environ.__setitem__('AMENT_PREFIX_PATH', os.pathsep.join(filter(None, [sys.prefix, _p])))
PTH
"${venv}/bin/ros2" interface show vision_msgs/msg/LabelInfo > /dev/null
"${python}" -c 'import tf2_ros; tf2_ros.Buffer()'
echo "install_ros2_tools: ros2, launch, vision_msgs and tf2_ros installed into ${venv}"
