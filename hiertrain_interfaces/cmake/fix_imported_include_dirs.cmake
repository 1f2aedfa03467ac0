# The rosidl_generator_py targets exported by the ROS 2 PyPI wheels (ros-std-msgs,
# ros-builtin-interfaces, ...) carry the include directories of the machine that
# built them (/opt/python/cp3xx-.../include and its numpy), which CMake rejects
# at generate time. Drop include directories that do not exist here and add
# this interpreter's Python and NumPy headers instead. With an apt / source ROS
# install every path exists and this changes nothing.
function(hiertrain_drop_missing_include_dirs)
  get_property(_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    set(_dropped FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        list(APPEND _kept "${_dir}")
      else()
        set(_dropped TRUE)
      endif()
    endforeach()
    if(_dropped)
      if(NOT Python3_NumPy_FOUND)
        find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
      endif()
      list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      list(REMOVE_DUPLICATES _kept)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endfunction()
