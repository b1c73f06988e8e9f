/* An NVTX injection library that records the ranges a process pushes.
 *
 * NVTX loads the library named by NVTX_INJECTION64_PATH (as Nsight tools do)
 * and calls InitializeInjectionNvtx2, which installs the handlers below in
 * NVTX's CORE and CORE2 function tables. Each event becomes one tab-separated
 * line in the file named by CUGN_NVTX_RECORD:
 *
 *   domain    DOMAIN_ID  NAME
 *   category  DOMAIN_ID  CATEGORY_ID  NAME
 *   push      THREAD     DOMAIN_ID    CATEGORY_ID  MESSAGE
 *   pop       THREAD     DOMAIN_ID
 *
 * CUGN_NVTX_RECORD=- makes it a null tool that receives every event and writes
 * nothing: the floor of what a range costs when a profiler is attached.
 *
 * DOMAIN_ID 0 is NVTX's default domain (nvtxRangePush and friends). Messages
 * may be ASCII or registered strings (the Python nvtx package registers every
 * message); other message types are written as "?".
 *
 * Built by profiling/nvtx_recorder.py against the NVTX headers.
 */
#define _GNU_SOURCE
#include <nvtx3/nvToolsExt.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct recorded_domain {
    unsigned long id;
    char *name;
};

static FILE *out; /* NULL: the null tool */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long domain_count;

static long thread_id(void) { return (long)syscall(SYS_gettid); }

static unsigned long domain_id(nvtxDomainHandle_t domain)
{
    return domain ? ((struct recorded_domain *)domain)->id : 0;
}

static const char *message_of(const nvtxEventAttributes_t *attributes)
{
    if (!attributes) return "?";
    switch (attributes->messageType) {
    case NVTX_MESSAGE_TYPE_ASCII:
        return attributes->message.ascii ? attributes->message.ascii : "";
    case NVTX_MESSAGE_TYPE_REGISTERED:
        /* Our handles are the copies made by register_string. */
        return attributes->message.registered ? (const char *)attributes->message.registered : "";
    default:
        return "?";
    }
}

static void record_push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t *attributes)
{
    if (!out) return;
    pthread_mutex_lock(&lock);
    fprintf(out, "push\t%ld\t%lu\t%u\t%s\n", thread_id(), domain_id(domain),
            attributes ? attributes->category : 0u, message_of(attributes));
    fflush(out);
    pthread_mutex_unlock(&lock);
}

static void record_pop(nvtxDomainHandle_t domain)
{
    if (!out) return;
    pthread_mutex_lock(&lock);
    fprintf(out, "pop\t%ld\t%lu\n", thread_id(), domain_id(domain));
    fflush(out);
    pthread_mutex_unlock(&lock);
}

/* ---- CORE2: the domain API, which the Python nvtx package uses */

static nvtxDomainHandle_t NVTX_API domain_create(const char *name)
{
    struct recorded_domain *domain = calloc(1, sizeof *domain);
    if (!domain) return NULL;
    domain->name = strdup(name ? name : "");
    pthread_mutex_lock(&lock);
    domain->id = ++domain_count;
    if (out) {
        fprintf(out, "domain\t%lu\t%s\n", domain->id, domain->name);
        fflush(out);
    }
    pthread_mutex_unlock(&lock);
    return (nvtxDomainHandle_t)domain;
}

/* Domains and strings live until the process ends: handles may be used until then. */
static void NVTX_API domain_destroy(nvtxDomainHandle_t domain) { (void)domain; }

static nvtxStringHandle_t NVTX_API register_string(nvtxDomainHandle_t domain, const char *string)
{
    (void)domain;
    return (nvtxStringHandle_t)strdup(string ? string : "");
}

static void NVTX_API name_category(nvtxDomainHandle_t domain, uint32_t category, const char *name)
{
    if (!out) return;
    pthread_mutex_lock(&lock);
    fprintf(out, "category\t%lu\t%u\t%s\n", domain_id(domain), category, name ? name : "");
    fflush(out);
    pthread_mutex_unlock(&lock);
}

static int NVTX_API domain_push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t *attributes)
{
    record_push(domain, attributes);
    return 0;
}

static int NVTX_API domain_pop(nvtxDomainHandle_t domain)
{
    record_pop(domain);
    return 0;
}

/* ---- CORE: the default domain */

static int NVTX_API push_ex(const nvtxEventAttributes_t *attributes)
{
    record_push(NULL, attributes);
    return 0;
}

static int NVTX_API push_ascii(const char *message)
{
    nvtxEventAttributes_t attributes = {0};
    attributes.messageType = NVTX_MESSAGE_TYPE_ASCII;
    attributes.message.ascii = message;
    record_push(NULL, &attributes);
    return 0;
}

static int NVTX_API pop_default(void)
{
    record_pop(NULL);
    return 0;
}

static int install(NvtxFunctionTable table, unsigned int size, unsigned int id,
                   NvtxFunctionPointer handler)
{
    if (!table || id >= size || !table[id]) return 0;
    *table[id] = handler;
    return 1;
}

NVTX_DYNAMIC_EXPORT int NVTX_API InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get_export_table)
{
    const char *path = getenv("CUGN_NVTX_RECORD");
    const NvtxExportTableCallbacks *callbacks;
    NvtxFunctionTable core = NULL, core2 = NULL;
    unsigned int core_size = 0, core2_size = 0;
    int ok = 1;

    if (!path) return 0; /* 0: NVTX stays a no-op */
    if (strcmp(path, "-") != 0 && !(out = fopen(path, "w"))) return 0;
    callbacks = (const NvtxExportTableCallbacks *)get_export_table(NVTX_ETID_CALLBACKS);
    if (!callbacks || !callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &core, &core_size)
        || !callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &core2, &core2_size))
        return 0;

#define INSTALL(table, size, id, fn) ok &= install(table, size, id, (NvtxFunctionPointer)fn)
    INSTALL(core2, core2_size, NVTX_CBID_CORE2_DomainCreateA, domain_create);
    INSTALL(core2, core2_size, NVTX_CBID_CORE2_DomainDestroy, domain_destroy);
    INSTALL(core2, core2_size, NVTX_CBID_CORE2_DomainRegisterStringA, register_string);
    INSTALL(core2, core2_size, NVTX_CBID_CORE2_DomainNameCategoryA, name_category);
    INSTALL(core2, core2_size, NVTX_CBID_CORE2_DomainRangePushEx, domain_push);
    INSTALL(core2, core2_size, NVTX_CBID_CORE2_DomainRangePop, domain_pop);
    INSTALL(core, core_size, NVTX_CBID_CORE_RangePushEx, push_ex);
    INSTALL(core, core_size, NVTX_CBID_CORE_RangePushA, push_ascii);
    INSTALL(core, core_size, NVTX_CBID_CORE_RangePop, pop_default);
#undef INSTALL
    return ok;
}
