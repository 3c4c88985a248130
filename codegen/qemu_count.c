/* qemu_count.c: a QEMU TCG plugin (plugin API version 1, QEMU 7.x) that counts executed guest
 * instructions exactly, per translation block. Part of qlane (qlane.codegen.qemu builds it).
 *
 * Every translation of a block gets a counter keyed by (start address, instruction count); an
 * inline "add 1" op QEMU emits at the block's entry counts its executions without a callback.
 * The same address can be translated more than once (after a flush, or with another length),
 * so the table keeps one counter per (address, length) and the lines repeat the address then.
 *
 * Load with: qemu-system-arm ... -plugin /path/libqemu_count.so,out=FILE
 * At exit FILE gets one line per counter: "hex_vaddr n_insns execs" (executed ones only).
 *
 * Or with shm=FILE (a file the caller made, QC_SHM_HEADER bytes plus room for its records): the
 * counters live in that file, mapped shared, so another process reads them while the guest is
 * stopped. Its header is four little-endian uint64: magic "QLCNT001", capacity (records),
 * count (records made so far), lost (translations without a record: the file was full); then
 * `count` records {vaddr, n_insns, execs}, each uint64. Records never move once made.
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written out below; they
 * follow the version-1 API that QEMU 7.2 exports (nm -D qemu-system-arm | grep qemu_plugin).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define QC_EXPORT __attribute__((visibility("default")))

/* ---- the part of the plugin API this file uses (version 1) ---- */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;

typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb,
                                              enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_outs(const char *string);

QC_EXPORT int qemu_plugin_version = 1;
QC_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                  char **argv);

/* ---- the counters ---- */

/* One translation: where it starts, how many instructions, how often it ran. Counters never
 * move once made (QEMU's generated code holds a pointer to `execs`); the hash table holds
 * pointers to them and may grow. */
typedef struct {
    uint64_t vaddr;
    uint64_t n_insns;
    uint64_t execs;
} qc_counter;

#define QC_CHUNK 4096u
typedef struct qc_chunk {
    struct qc_chunk *next;
    size_t used;
    qc_counter items[QC_CHUNK];
} qc_chunk;

static qc_chunk *qc_chunks;
static qc_counter **qc_table; /* open addressing, linear probing; size a power of two */
static size_t qc_size, qc_count;
static char *qc_out_path;

/* the shm=FILE mode: header then records, mapped shared */
#define QC_SHM_HEADER 64u
#define QC_SHM_MAGIC 0x313030544E434C51ull /* "QLCNT001" little-endian */
typedef struct {
    uint64_t magic;
    uint64_t capacity;
    uint64_t count;
    uint64_t lost;
} qc_shm_header;
static qc_shm_header *qc_shm;
static qc_counter *qc_shm_items;
static volatile int qc_lock_word;

/* Translations may come from several vCPU threads: a spin lock keeps the table consistent
 * (translation is rare next to execution, which needs no lock). */
static void qc_lock(void)
{
    while (__atomic_exchange_n(&qc_lock_word, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&qc_lock_word, __ATOMIC_RELAXED)) {
        }
    }
}

static void qc_unlock(void)
{
    __atomic_store_n(&qc_lock_word, 0, __ATOMIC_RELEASE);
}

static size_t qc_hash(uint64_t vaddr, uint64_t n_insns)
{
    uint64_t h = (vaddr ^ (n_insns << 48)) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17);
}

static bool qc_grow(void)
{
    size_t size = qc_size ? qc_size * 2u : 1024u;
    qc_counter **table = calloc(size, sizeof *table);
    if (table == NULL) {
        return false;
    }
    for (size_t i = 0; i < qc_size; ++i) {
        qc_counter *c = qc_table[i];
        if (c != NULL) {
            size_t j = qc_hash(c->vaddr, c->n_insns) & (size - 1u);
            while (table[j] != NULL) {
                j = (j + 1u) & (size - 1u);
            }
            table[j] = c;
        }
    }
    free(qc_table);
    qc_table = table;
    qc_size = size;
    return true;
}

static qc_counter *qc_find(uint64_t vaddr, uint64_t n_insns)
{
    if ((qc_count + 1u) * 2u > qc_size && !qc_grow()) {
        return NULL;
    }
    size_t i = qc_hash(vaddr, n_insns) & (qc_size - 1u);
    for (; qc_table[i] != NULL; i = (i + 1u) & (qc_size - 1u)) {
        if (qc_table[i]->vaddr == vaddr && qc_table[i]->n_insns == n_insns) {
            return qc_table[i];
        }
    }
    if (qc_shm != NULL) {
        uint64_t n = qc_shm->count;
        if (n < qc_shm->capacity) {
            qc_counter *c = &qc_shm_items[n];
            c->vaddr = vaddr;
            c->n_insns = n_insns;
            c->execs = 0u;
            __atomic_store_n(&qc_shm->count, n + 1u, __ATOMIC_RELEASE);
            qc_table[i] = c;
            ++qc_count;
            return c;
        }
        ++qc_shm->lost; /* full: a private counter keeps the table consistent */
    }
    if (qc_chunks == NULL || qc_chunks->used == QC_CHUNK) {
        qc_chunk *chunk = calloc(1, sizeof *chunk);
        if (chunk == NULL) {
            return NULL;
        }
        chunk->next = qc_chunks;
        qc_chunks = chunk;
    }
    qc_counter *c = &qc_chunks->items[qc_chunks->used++];
    c->vaddr = vaddr;
    c->n_insns = n_insns;
    qc_table[i] = c;
    ++qc_count;
    return c;
}

static void qc_on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    uint64_t n_insns = (uint64_t)qemu_plugin_tb_n_insns(tb);
    qc_lock();
    qc_counter *c = qc_find(vaddr, n_insns);
    qc_unlock();
    if (c == NULL) {
        qemu_plugin_outs("qemu_count: out of memory, counts are incomplete\n");
        return;
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &c->execs, 1);
}

static void qc_on_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    if (qc_out_path == NULL) {
        return;
    }
    FILE *f = fopen(qc_out_path, "w");
    if (f == NULL) {
        qemu_plugin_outs("qemu_count: cannot write the out= file\n");
        return;
    }
    qc_lock();
    for (qc_chunk *chunk = qc_chunks; chunk != NULL; chunk = chunk->next) {
        for (size_t i = 0; i < chunk->used; ++i) {
            const qc_counter *c = &chunk->items[i];
            if (c->execs != 0u) {
                fprintf(f, "%llx %llu %llu\n", (unsigned long long)c->vaddr,
                        (unsigned long long)c->n_insns, (unsigned long long)c->execs);
            }
        }
    }
    qc_unlock();
    fclose(f);
}

/* Maps the caller's file; its header must carry the magic and a capacity that fits. */
static bool qc_map_shm(const char *path)
{
    int fd = open(path, O_RDWR);
    if (fd < 0) {
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < QC_SHM_HEADER) {
        close(fd);
        return false;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        return false;
    }
    qc_shm_header *h = map;
    uint64_t room = ((uint64_t)st.st_size - QC_SHM_HEADER) / sizeof(qc_counter);
    if (h->magic != QC_SHM_MAGIC || h->capacity > room) {
        munmap(map, (size_t)st.st_size);
        return false;
    }
    h->count = 0u;
    h->lost = 0u;
    qc_shm = h;
    qc_shm_items = (qc_counter *)((char *)map + QC_SHM_HEADER);
    return true;
}

QC_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                  char **argv)
{
    (void)info;
    const char *shm_path = NULL;
    for (int i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            qc_out_path = strdup(argv[i] + 4);
        } else if (strncmp(argv[i], "shm=", 4) == 0) {
            shm_path = argv[i] + 4;
        }
    }
    if (qc_out_path == NULL && shm_path == NULL) {
        qemu_plugin_outs("qemu_count: give the output file as out=FILE or shm=FILE\n");
        return 1;
    }
    if (shm_path != NULL && !qc_map_shm(shm_path)) {
        qemu_plugin_outs("qemu_count: cannot map the shm= file (made by the caller, with "
                         "a QLCNT001 header)\n");
        return 1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, qc_on_translate);
    qemu_plugin_register_atexit_cb(id, qc_on_exit, NULL);
    return 0;
}
