/* gRPC server reflection (grpc.reflection.v1 and v1alpha): lets generic
 * clients such as grpcurl list ipamd's services and fetch the descriptors of
 * proto/, which the build embeds as a FileDescriptorSet.
 *
 * The index of files and symbols is built once from the embedded set and is
 * read-only afterwards. */
#ifndef IPAMD_REFLECTION_H
#define IPAMD_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "grpc/reflection/v1/reflection.pb-c.h"

/* Builds the index; 0, or -1 with err set when the embedded set is malformed
 * (a build error). Calling it again does nothing. */
int refl_init(char *err, size_t errlen);
void refl_free(void);

/* The packed ServerReflectionResponse to one request: the file asked for (by
 * name or by a symbol it defines) with its dependencies, the services, or an
 * ErrorResponse naming the input (NOT_FOUND, INVALID_ARGUMENT). malloc'ed;
 * *len is its size. Aborts when out of memory. */
uint8_t *refl_answer(const Grpc__Reflection__V1__ServerReflectionRequest *req, size_t *len);

#endif
