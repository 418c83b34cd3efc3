/*
 * certinject.so: an LD_PRELOAD shim that gives wrk (which has no option for
 * it) a TLS client certificate, so wrk can load an mTLS proxy.
 *
 * It wraps SSL_CTX_new(): after the real call it loads $CERTINJECT_CERT (PEM
 * chain) and $CERTINJECT_KEY (PEM key) into every new context, and exits the
 * process with status 2 if either cannot be loaded (a silent cert-less wrk
 * would measure refusals). Symbols are looked up at run time, so neither
 * OpenSSL headers nor libssl-dev are needed to build it.
 *
 * Build: gcc -O2 -shared -fPIC -o certinject.so certinject.c -ldl
 * Use:   CERTINJECT_CERT=client.pem CERTINJECT_KEY=client.key \
 *        LD_PRELOAD=/path/certinject.so wrk https://127.0.0.1:PORT/
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef void SSL_CTX;
typedef void SSL_METHOD;
typedef SSL_CTX *(*ctx_new_fn)(const SSL_METHOD *);
typedef int (*use_chain_fn)(SSL_CTX *, const char *);
typedef int (*use_key_fn)(SSL_CTX *, const char *, int);

#define PEM_FILETYPE 1 /* SSL_FILETYPE_PEM */

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
{
    static ctx_new_fn real_new;
    static use_chain_fn use_chain;
    static use_key_fn use_key;
    if (!real_new) {
        real_new = (ctx_new_fn)dlsym(RTLD_NEXT, "SSL_CTX_new");
        use_chain = (use_chain_fn)dlsym(RTLD_DEFAULT, "SSL_CTX_use_certificate_chain_file");
        use_key = (use_key_fn)dlsym(RTLD_DEFAULT, "SSL_CTX_use_PrivateKey_file");
        if (!real_new || !use_chain || !use_key) {
            fprintf(stderr, "certinject: libssl symbols not found (is the program linked to OpenSSL?)\n");
            exit(2);
        }
    }
    SSL_CTX *ctx = real_new(method);
    const char *cert = getenv("CERTINJECT_CERT");
    const char *key = getenv("CERTINJECT_KEY");
    if (ctx && cert && key) {
        if (use_chain(ctx, cert) != 1 || use_key(ctx, key, PEM_FILETYPE) != 1) {
            fprintf(stderr, "certinject: cannot load certificate %s / key %s\n", cert, key);
            exit(2);
        }
    }
    return ctx;
}
