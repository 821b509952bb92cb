# The down-only rule, enforced by the compiler. Every folder of the code is a target that names
# the targets it depends on; a source file sees, under their project-relative paths
# ("core/broker/broker.hpp"), only its own folder's headers and those of the folders it depends
# on (directly or through their public dependencies). An include that points up or sideways
# names a file the compiler cannot find, and the build fails there.
#
# How: each target gets an include tree of its own, build/inc/<target>/, holding one symbolic
# link, <folder> -> the source folder. The tree is a PUBLIC include directory, so it reaches
# exactly the targets that link this one. Nothing outside tests/ and bench/ has the project root
# on its include path.

# celeriac_folder(TARGET FOLDER [PRIVATE|INTERFACE]): TARGET's own headers are those of FOLDER
# (relative to the project root). PRIVATE for an executable (only it sees them), INTERFACE for a
# header-only target.
function(celeriac_folder target folder)
  set(scope PUBLIC)
  if(ARGC GREATER 2)
    set(scope ${ARGV2})
  endif()
  set(tree "${CMAKE_BINARY_DIR}/inc/${target}")
  set(link "${tree}/${folder}")
  get_filename_component(parent "${link}" DIRECTORY)
  file(MAKE_DIRECTORY "${parent}")
  if(NOT IS_SYMLINK "${link}")
    file(CREATE_LINK "${PROJECT_SOURCE_DIR}/${folder}" "${link}" SYMBOLIC)
  endif()
  target_include_directories(${target} ${scope} "${tree}")
endfunction()
