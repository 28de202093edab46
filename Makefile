# Build glue for clip_dinoiser_ros outside a ROS workspace (a plain Python venv with the ROS 2
# `ros-*` wheels from PyPI). Inside a ROS 2 workspace use `colcon build` instead (CMakeLists.txt).
#
#   make install   .venv + pinned dependencies + ROS interfaces + ROS 2 tools + this package (idempotent)
#   make test      install, then run the test suite against the INSTALLED package
#                  (ROS_DISTRO=kilted: the same in .venv-kilted with the ROS 2 Kilted wheels)
#   make demo      install, then run the photo-stream demo (make demo WEIGHTS=random)
#   make bench     install, then run bench/bench_*.py (BENCH=bench/bench_text.py BENCH_ARGS=...)
#   make gpu-bundle  gpu_bundle/: the offline GPU check (python3 gpu_bundle/gpu_check.py --out DIR; README)
#   make clean     remove build/ and the stamps (not .venv)
#
# Order matters: the interfaces are built with CMake and installed into .venv first (they bring a
# generated, empty clip_dinoiser_ros/__init__.py), then pip installs our sources over them, so our
# __init__.py (pkgutil.extend_path) is the one in site-packages.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := install
.DELETE_ON_ERROR:

PYTHON ?= python3.11
# The ROS 2 distribution of the venv: jazzy (the LTS, default, .venv) or kilted (.venv-kilted; end of
# life 2026-12-31). Its exact package set is .ci/requirements-$(ROS_DISTRO).txt; a sourced ROS 2 setup
# exports ROS_DISTRO, so it is followed.
ROS_DISTRO ?= jazzy
ifeq ($(wildcard .ci/requirements-$(ROS_DISTRO).txt),)
$(error ROS_DISTRO=$(ROS_DISTRO) is not supported here: use jazzy (the default) or kilted)
endif
ifeq ($(ROS_DISTRO),jazzy)
VENV ?= .venv
else
VENV ?= .venv-$(ROS_DISTRO)
endif
VENV_ABS := $(abspath $(VENV))
VPY := $(VENV_ABS)/bin/python
PIP := $(VPY) -m pip
BUILD := build/$(ROS_DISTRO)
STAMPS := $(BUILD)/stamps
CMAKE_BUILD := $(BUILD)/cmake
SITE_PACKAGES = $(VENV_ABS)/lib/python3.11/site-packages
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Exact versions per distribution (ROS 2 wheels, their CMake tooling, torch and the rest) in
# .ci/requirements-$(ROS_DISTRO).txt; setup.py states only ranges; pip and setuptools in
# .ci/build-requirements.txt; the optional colcon tools (make colcon-tools) here.
BUILD_REQUIREMENTS := .ci/build-requirements.txt
REQUIREMENTS := .ci/requirements-$(ROS_DISTRO).txt
COLCON_PINS := colcon-common-extensions==0.3.0
# colcon gets a venv of its own: it pulls in pytest plugins (pytest-cov, -repeat, -rerunfailures)
# that must not leak into the test environment.
COLCON_VENV := $(abspath build)/colcon-venv

# Everything in the package (modules and data files), and the directories too, so that deleting or
# renaming a module also triggers a reinstall.
PY_SOURCES := $(shell find clip_dinoiser_ros -type f -not -path '*/__pycache__/*' -not -name '*.pyc')
PY_DIRS := $(shell find clip_dinoiser_ros -type d -not -name __pycache__)
INTERFACES := $(wildcard msg/*.msg srv/*.srv)
SHARE_FILES := $(shell find launch config -type f 2>/dev/null)

# --- DDS environment for every process that touches ROS (tests, demo, benchmarks) ---------------
# Shared-memory transport only, with segments big enough for 640x480 frames; nothing leaves the
# machine. ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST together with it delivers nothing: never pass it.
export FASTDDS_BUILTIN_TRANSPORTS := SHM?sockets_size=33554432
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
unexport ROS_AUTOMATIC_DISCOVERY_RANGE ROS_LOCALHOST_ONLY
# A DDS domain of its own per run (1..100), so concurrent runs do not see each other.
# Override: make test ROS_DOMAIN_ID=42 (or export it).
ifndef ROS_DOMAIN_ID
ROS_DOMAIN_ID := $(shell echo $$(( RANDOM % 100 + 1 )))
endif
export ROS_DOMAIN_ID

PYTEST_ARGS ?=
# make test PRECISION=fp32: "auto" precision runs fp32 (CLIP_DINOISER_FORCE_FP32=1), as on a CPU without native bf16
PRECISION ?= auto
BENCH ?= $(wildcard bench/bench_*.py)
BENCH_ARGS ?=
DEMO_ARGS ?=
WEIGHTS ?=
ifeq ($(WEIGHTS),random)
override DEMO_ARGS += --random-weights
endif

.PHONY: venv install install-unlocked test demo bench gpu-bundle clean colcon-tools

venv: $(STAMPS)/deps
# Installs are serialised with a lock (several `make test` may run at once in one checkout).
install:
	@mkdir -p $(BUILD)
	@flock $(BUILD)/.install.lock $(MAKE) --no-print-directory install-unlocked
install-unlocked: $(STAMPS)/package $(STAMPS)/ros-tools

# The venv: created once with Python 3.11 (the ROS wheels are cp311). pyvenv.cfg marks it (make
# would follow bin/python's symlink to the interpreter's own, old, mtime).
$(VENV_ABS)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV_ABS)

$(STAMPS)/bootstrap: $(VENV_ABS)/pyvenv.cfg $(BUILD_REQUIREMENTS)
	@mkdir -p $(STAMPS)
	$(PIP) install -r $(BUILD_REQUIREMENTS)
	touch $@

# All pinned dependencies of this distribution; the package itself comes last (make package).
$(STAMPS)/deps: $(REQUIREMENTS) $(STAMPS)/bootstrap
	$(PIP) install -c $(BUILD_REQUIREMENTS) -r $(REQUIREMENTS)
	touch $@

# The ROS interfaces (msg/, srv/), built with CMake into the venv after the ROS tools (QueryMap answers
# in vision_msgs). fix_ament_paths.py first points
# the wheels' exported CMake files at this venv's Python and numpy include directories (they name
# /opt/python/cp311-cp311/..., the wheels' build image). CMake's ament_python_install_package
# leaves a clip_dinoiser_ros-*.egg-info, which pip cannot uninstall ("distutils installed
# project") and which would shadow pip's own metadata: it is removed, pip owns the metadata. The
# generated Python is made afresh: rosidl_generator_py keeps a removed message in its __init__.py.
$(STAMPS)/interfaces: CMakeLists.txt package.xml setup.py $(INTERFACES) $(SHARE_FILES) \
		.ci/fix_ament_paths.py $(STAMPS)/ros-tools
	$(VPY) .ci/fix_ament_paths.py $(VENV_ABS)
	rm -rf $(CMAKE_BUILD)/rosidl_generator_py $(SITE_PACKAGES)/clip_dinoiser_ros/msg $(SITE_PACKAGES)/clip_dinoiser_ros/srv
	AMENT_PREFIX_PATH=$(VENV_ABS) CMAKE_PREFIX_PATH=$(VENV_ABS) \
	  cmake -S . -B $(CMAKE_BUILD) -Wno-dev \
	    -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_INSTALL_PREFIX=$(VENV_ABS) \
	    -DPython3_EXECUTABLE=$(VPY) \
	    -DBUILD_TESTING=OFF \
	    -DCLIP_DINOISER_INSTALL_PYTHON_SOURCES=OFF
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL cmake --build $(CMAKE_BUILD) -j $(JOBS)
	cmake --install $(CMAKE_BUILD) > $(CMAKE_BUILD)/install.log || { cat $(CMAKE_BUILD)/install.log; exit 1; }
	rm -rf $(SITE_PACKAGES)/clip_dinoiser_ros-*.egg-info
	touch $@

# The ROS 2 tools no registry serves (ros2 CLI, launch, vision_msgs, composition_interfaces, tf2_ros), from
# ../shared/ros2-src or their pinned upstream tags; afterwards .venv/bin/ros2 works with nothing sourced.
$(STAMPS)/ros-tools: .ci/install_ros2_tools.sh .ci/ros2-tools-requirements.txt .ci/fix_ament_paths.py $(STAMPS)/deps
	bash .ci/install_ros2_tools.sh $(VENV_ABS) $(BUILD)/ros2-tools $(ROS_DISTRO)
	touch $@

# Our Python package, NOT editable, after the interfaces. setuptools' build/lib cache is dropped so
# a deleted module cannot survive into the wheel. The last line checks the result from outside the
# source tree: the generated modules import, and our __init__.py is the installed one.
$(STAMPS)/package: setup.py $(PY_SOURCES) $(PY_DIRS) $(STAMPS)/interfaces
	rm -rf $(BUILD)/lib $(BUILD)/bdist.*
	$(PIP) install --no-deps --no-build-isolation --force-reinstall --quiet .
	cd / && $(VPY) -c 'import filecmp, sys, clip_dinoiser_ros, clip_dinoiser_ros.msg, clip_dinoiser_ros.srv; \
	  init = clip_dinoiser_ros.__file__; \
	  sys.exit(0 if filecmp.cmp(init, "$(abspath clip_dinoiser_ros/__init__.py)", shallow=False) \
	           else f"installed {init} is not clip_dinoiser_ros/__init__.py")'
	touch $@

# Tests run with the venv's pytest (not `python -m pytest`, which would put the source tree first
# on sys.path), so they exercise the installed package including the generated messages.
test: install
	@echo "make test: ROS_DISTRO=$(ROS_DISTRO) ROS_DOMAIN_ID=$(ROS_DOMAIN_ID) FASTDDS_BUILTIN_TRANSPORTS=$(FASTDDS_BUILTIN_TRANSPORTS) PRECISION=$(PRECISION)"
	$(if $(filter-out auto fp32,$(PRECISION)),$(error PRECISION must be auto or fp32, got '$(PRECISION)'))
	$(if $(filter fp32,$(PRECISION)),CLIP_DINOISER_FORCE_FP32=1) $(VENV_ABS)/bin/pytest test $(PYTEST_ARGS)

demo: install
	$(VENV_ABS)/bin/clip-dinoiser-demo $(DEMO_ARGS)

# Benchmarks run against the installed package too (bench/ is on sys.path, the source tree is not);
# random weights, no model hub here, hence offline.
bench: install
	@for script in $(BENCH); do \
	  echo "== $$script $(BENCH_ARGS)"; \
	  HF_HUB_OFFLINE=1 $(VPY) $$script $(BENCH_ARGS) || exit $$?; \
	done

# One folder to carry to a machine with only python3, torch and CUDA (no network): the GPU check, the
# package's sources, the pure-Python wheels open_clip needs (from the venv), three CamVid frames from
# ../shared/data (never committed). Rebuilt every time; the check's CPU run is in the test suite.
gpu-bundle: $(STAMPS)/deps
	$(VPY) gpu_check/make_bundle.py gpu_bundle

# Optional: colcon, for building this package in a ROS 2 workspace against .venv's ROS wheels
# (see README). Also fixes .venv's exported CMake paths, which any CMake build against it needs.
colcon-tools: $(STAMPS)/deps
	$(VPY) .ci/fix_ament_paths.py $(VENV_ABS)
	test -x $(COLCON_VENV)/bin/python || $(PYTHON) -m venv $(COLCON_VENV)
	$(COLCON_VENV)/bin/python -m pip install --quiet $(COLCON_PINS)
	@echo "colcon: $(COLCON_VENV)/bin/colcon"

clean:
	rm -rf build clip_dinoiser_ros.egg-info
