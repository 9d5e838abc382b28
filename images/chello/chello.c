/*
 * chello: the C guest image. Built by `cargo spindle build` with
 * `musl-gcc -static -O2 -pthread` (Debian's musl-gcc has no rcrt1.o, so
 * `-static-pie` would quietly produce a dynamically linked program).
 *
 * Prints a greeting, argc and every argv[i], creates one POSIX thread and
 * joins it, and exits 0 (1 with a message if the thread cannot be made).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *worker(void *arg)
{
	int *value = arg;
	printf("chello: thread running, got %d\n", *value);
	*value *= 2;
	return value;
}

int main(int argc, char **argv)
{
	printf("hello from chello (C, musl, static)\n");
	printf("argc = %d\n", argc);
	for (int i = 0; i < argc; i++)
		printf("argv[%d] = %s\n", i, argv[i]);

	pthread_t thread;
	int value = 21;
	int err = pthread_create(&thread, NULL, worker, &value);
	if (err != 0) {
		printf("chello: pthread_create failed: %s\n", strerror(err));
		return 1;
	}
	void *result = NULL;
	err = pthread_join(thread, &result);
	if (err != 0 || result != &value || value != 42) {
		printf("chello: pthread_join failed: %s (value %d)\n", strerror(err), value);
		return 1;
	}
	printf("chello: thread joined, value %d\n", value);
	return 0;
}
