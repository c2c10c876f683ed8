# Helpers that declare a proto library, a C++ library, a binary and a test in one line each.
#
#   mkt_proto_library(NAME name PROTOS a.proto ... [GRPC] [DEPS other_proto_lib ...])
#   mkt_cc_library(NAME name SRCS a.cc ... [DEPS target ...])
#   mkt_cc_binary(NAME name SRCS main.cc ... [DEPS target ...])
#   mkt_cc_test(NAME name SRCS a_test.cc ... [DEPS target ...] [LABELS unit|integration|e2e])
#   mkt_embed_sql(NAME name DIR migrations COMPONENT channels)
#
# Project code builds with -Wall -Wextra -Werror; generated code is included as SYSTEM so
# warnings in protoc/grpc output never break the build.

set(MKT_WARNINGS -Wall -Wextra -Werror -Wno-missing-field-initializers)

# Every shipped binary (services and tools), without tests: `./dev up` builds just this.
add_custom_target(mkt_runtime)

# Proto sources live under proto/; generated code goes to the build tree and is never committed.
# ROOT (default: the calling directory) is the directory the PROTOS paths are relative to; it
# decides where the generated files land (gen/<path>.pb.h), e.g. ROOT /usr/share/grpc-proto.
function(mkt_proto_library)
  cmake_parse_arguments(ARG "GRPC" "NAME;ROOT" "PROTOS;DEPS" ${ARGN})
  if(NOT ARG_ROOT)
    set(ARG_ROOT "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  set(abs_protos)
  foreach(p ${ARG_PROTOS})
    list(APPEND abs_protos "${ARG_ROOT}/${p}")
  endforeach()
  add_library(${ARG_NAME} STATIC ${abs_protos})
  # protobuf_generate() names outputs by the path relative to CMAKE_CURRENT_SOURCE_DIR.
  set(CMAKE_CURRENT_SOURCE_DIR "${ARG_ROOT}")
  target_link_libraries(${ARG_NAME} PUBLIC protobuf::libprotobuf ${ARG_DEPS})
  set(out_dir "${PROJECT_BINARY_DIR}/gen")
  file(MAKE_DIRECTORY "${out_dir}")
  set(import_dirs "${PROJECT_SOURCE_DIR}/proto" "/usr/share/grpc-proto")
  protobuf_generate(TARGET ${ARG_NAME} LANGUAGE cpp
    IMPORT_DIRS ${import_dirs} PROTOC_OUT_DIR "${out_dir}")
  if(ARG_GRPC)
    target_link_libraries(${ARG_NAME} PUBLIC gRPC::grpc++)
    protobuf_generate(TARGET ${ARG_NAME} LANGUAGE grpc
      GENERATE_EXTENSIONS .grpc.pb.h .grpc.pb.cc
      PLUGIN "protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>"
      IMPORT_DIRS ${import_dirs} PROTOC_OUT_DIR "${out_dir}")
  endif()
  target_include_directories(${ARG_NAME} SYSTEM PUBLIC "${out_dir}")
endfunction()

function(mkt_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(${ARG_NAME} STATIC ${ARG_SRCS})
  target_compile_options(${ARG_NAME} PRIVATE ${MKT_WARNINGS})
  target_include_directories(${ARG_NAME} PUBLIC "${PROJECT_SOURCE_DIR}")
  target_link_libraries(${ARG_NAME} PUBLIC ${ARG_DEPS})
endfunction()

function(mkt_cc_binary)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_compile_options(${ARG_NAME} PRIVATE ${MKT_WARNINGS})
  target_include_directories(${ARG_NAME} PRIVATE "${PROJECT_SOURCE_DIR}")
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS})
  add_dependencies(mkt_runtime ${ARG_NAME})
endfunction()

# Tests carry a label: `unit` (no servers), `integration` (real PostgreSQL/Kafka),
# `e2e` (service processes started by the test). ./dev test runs all of them.
function(mkt_cc_test)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_compile_options(${ARG_NAME} PRIVATE ${MKT_WARNINGS})
  target_include_directories(${ARG_NAME} PRIVATE "${PROJECT_SOURCE_DIR}")
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  gtest_discover_tests(${ARG_NAME} DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT 300)
endfunction()

# Embeds the numbered SQL migrations of DIR (V001__what.sql, ...) into a library so a binary
# carries its own schema. Exposes `const mkt::pg::MigrationSet& <FUNCTION>()`.
function(mkt_embed_sql)
  cmake_parse_arguments(ARG "" "NAME;DIR;COMPONENT;FUNCTION" "" ${ARGN})
  file(GLOB sql_files CONFIGURE_DEPENDS "${ARG_DIR}/V*.sql")
  list(SORT sql_files)
  set(out "${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME}_embedded.cc")
  # A ';' list would split into several shell words; EmbedSql.cmake splits on '|' again.
  string(REPLACE ";" "|" files_arg "${sql_files}")
  add_custom_command(OUTPUT "${out}"
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DCOMPONENT=${ARG_COMPONENT}
            -DFUNCTION=${ARG_FUNCTION} "-DFILES=${files_arg}"
            -P "${PROJECT_SOURCE_DIR}/cmake/EmbedSql.cmake"
    DEPENDS ${sql_files} "${PROJECT_SOURCE_DIR}/cmake/EmbedSql.cmake"
    COMMENT "Embedding SQL migrations of ${ARG_COMPONENT}" VERBATIM)
  add_library(${ARG_NAME} STATIC "${out}")
  target_include_directories(${ARG_NAME} PUBLIC "${PROJECT_SOURCE_DIR}")
  target_link_libraries(${ARG_NAME} PUBLIC mkt_pg)
endfunction()
