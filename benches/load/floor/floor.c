/*
 * floor: the smallest useful DNS responder, the "floor" row of benches/load.
 *
 * One thread, one UDP socket, recvmmsg/sendmmsg in batches of up to 64.
 * For every query it copies the header and the question, sets QR and AA,
 * and appends one fixed A record (owner = the question name by compression
 * pointer, TTL 60, 192.0.2.10). No lookup, no EDNS (the OPT record and any
 * ECS option are dropped), no TCP. Malformed packets and responses are ignored.
 *
 * Build: cc -O2 -o floor floor.c      Run: floor 127.0.0.1 5390
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUFSZ 512

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ADDRESS PORT\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "floor: bad IPv4 address %s\n", argv[1]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("floor: bind");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGINT, &sa, NULL);

    static unsigned char in[BATCH][BUFSZ], out[BATCH][BUFSZ];
    static struct sockaddr_in peers[BATCH];
    static struct iovec iin[BATCH], iout[BATCH];
    static struct mmsghdr rx[BATCH], tx[BATCH];
    static const unsigned char answer[16] = {
        0xc0, 0x0c,             /* owner: pointer to the question name */
        0x00, 0x01, 0x00, 0x01, /* A IN */
        0x00, 0x00, 0x00, 0x3c, /* TTL 60 */
        0x00, 0x04, 192, 0, 2, 10,
    };
    for (int i = 0; i < BATCH; i++) {
        iin[i] = (struct iovec){in[i], BUFSZ};
        rx[i].msg_hdr = (struct msghdr){.msg_name = &peers[i], .msg_iov = &iin[i], .msg_iovlen = 1};
        iout[i].iov_base = out[i];
        tx[i].msg_hdr = (struct msghdr){.msg_iov = &iout[i], .msg_iovlen = 1};
    }
    fprintf(stderr, "floor: listening on %s:%s\n", argv[1], argv[2]);
    while (!stop) {
        for (int i = 0; i < BATCH; i++) rx[i].msg_hdr.msg_namelen = sizeof peers[i];
        int n = recvmmsg(fd, rx, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("floor: recvmmsg");
            return 1;
        }
        int m = 0;
        for (int i = 0; i < n; i++) {
            const unsigned char *q = in[i];
            size_t len = rx[i].msg_len, off = 12;
            if (len < 12 || (q[2] & 0x80) || q[4] != 0 || q[5] != 1) continue; /* response, or QDCOUNT != 1 */
            while (off < len && q[off] != 0) {
                if (q[off] & 0xc0) { off = len; break; } /* no pointers in a question */
                off += (size_t)q[off] + 1;
            }
            off += 5; /* root label + QTYPE + QCLASS */
            if (off > len || off + sizeof answer > BUFSZ) continue;
            unsigned char *r = out[m];
            memcpy(r, q, off);
            r[2] = (unsigned char)(0x84 | (q[2] & 0x79)); /* QR, AA, keep opcode and RD */
            r[3] = 0;                                     /* RA=0, RCODE=NOERROR */
            r[6] = 0; r[7] = 1;                           /* ANCOUNT 1 */
            r[8] = r[9] = r[10] = r[11] = 0;              /* NSCOUNT, ARCOUNT 0 */
            memcpy(r + off, answer, sizeof answer);
            iout[m].iov_len = off + sizeof answer;
            tx[m].msg_hdr.msg_name = &peers[i];
            tx[m].msg_hdr.msg_namelen = rx[i].msg_hdr.msg_namelen;
            m++;
        }
        for (int sent = 0; sent < m;) {
            int k = sendmmsg(fd, tx + sent, (unsigned)(m - sent), 0);
            if (k < 0) {
                if (errno == EINTR) continue;
                break; /* drop the rest of the batch, as a full socket would */
            }
            sent += k;
        }
    }
    close(fd);
    return 0;
}
