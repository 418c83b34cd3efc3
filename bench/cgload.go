// cgload: the load generator of certgate's benchmark (Go standard library only).
//
// Every mode connects over mTLS with a client certificate, checks what it gets
// back, and prints ONE JSON object on stdout. Every mode is bounded in time.
//
//	cgload check  one GET / with the certificate (or -nocert) and a second
//	              connection that tries to resume; reports status and TLS facts
//	cgload hs     full mTLS handshakes: -c workers, each a new connection with
//	              one "GET / Connection: close" read to EOF, for -d
//	cgload ws     WebSocket echo: -c connections, each sends a -size byte binary
//	              message, waits for the echo and checks it, for -d
//	cgload get    -n sequential downloads of -bytes from -path?bytes=N
//	cgload put    -n sequential uploads of -bytes (Content-Length) to -path;
//	              the upstream answers the byte count it received
//	              (get and put use a new keep-alive connection per transfer, as a
//	              browser would, and close it after the response)
//	cgload idle   opens -n keep-alive connections (one GET each), prints
//	              "READY ok failed" on stderr, holds them until stdin closes
//	              or -d passes
//
// Why Go: an OpenSSL 3.0 client spends about as much CPU per full mTLS
// handshake as the server, so one client core running OpenSSL tools cannot
// saturate one server core. Go's crypto/tls is cheaper.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	addr    = flag.String("addr", "127.0.0.1:18443", "host:port of the proxy")
	certF   = flag.String("cert", "client.pem", "client certificate chain (PEM)")
	keyF    = flag.String("key", "client.key", "client key (PEM)")
	caF     = flag.String("ca", "ca.pem", "CA that signed the server certificate (PEM)")
	noCert  = flag.Bool("nocert", false, "present no client certificate (check mode)")
	sni     = flag.String("servername", "127.0.0.1", "name to verify in the server certificate")
	conc    = flag.Int("c", 16, "concurrent connections / workers")
	dur     = flag.Duration("d", 10*time.Second, "duration of a timed mode; upper bound for the others")
	path    = flag.String("path", "/", "request path")
	size    = flag.Int("size", 64, "WebSocket message size (ws)")
	nBytes  = flag.Int64("bytes", 256<<20, "body size (get, put)")
	count   = flag.Int("n", 1, "transfers (get, put) or connections (idle)")
	timeout = flag.Duration("timeout", 30*time.Second, "per connection I/O deadline")
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "cgload: "+format+"\n", a...)
	os.Exit(2)
}

func tlsConfig() *tls.Config {
	caPEM, err := os.ReadFile(*caF)
	if err != nil {
		fail("reading CA %s: %v", *caF, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fail("no certificate in %s", *caF)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: *sni}
	if !*noCert {
		cert, err := tls.LoadX509KeyPair(*certF, *keyF)
		if err != nil {
			fail("loading client certificate %s / %s: %v", *certF, *keyF, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func dial(cfg *tls.Config) (*tls.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, cfg)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(*timeout))
	return c, nil
}

func emit(v map[string]interface{}) {
	json.NewEncoder(os.Stdout).Encode(v)
}

// percentiles in milliseconds of a slice of durations (sorted in place).
func pct(lat []time.Duration, p float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000.0
}

func get(c *tls.Conn, br *bufio.Reader, p string, keepAlive bool) (*http.Response, []byte, error) {
	conn := "keep-alive"
	if !keepAlive {
		conn = "close"
	}
	req := "GET " + p + " HTTP/1.1\r\nHost: " + *sni + "\r\nConnection: " + conn + "\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body, err
}

// ---------------------------------------------------------------- check
func modeCheck() {
	cfg := tlsConfig()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	out := map[string]interface{}{"status": 0, "error": ""}
	c, err := dial(cfg)
	if err == nil {
		st := c.ConnectionState()
		out["tls_version"] = map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[st.Version]
		out["cipher"] = tls.CipherSuiteName(st.CipherSuite)
		var resp *http.Response
		var body []byte
		resp, body, err = get(c, bufio.NewReader(c), *path, false)
		if err == nil {
			out["status"] = resp.StatusCode
			out["body_bytes"] = len(body)
		}
		c.Close()
	}
	if err != nil {
		out["error"] = err.Error()
		emit(out)
		return
	}
	// A second connection tells whether the server issued a usable session ticket.
	c2, err := dial(cfg)
	if err == nil {
		_, _, err = get(c2, bufio.NewReader(c2), *path, false)
		out["second_resumed"] = c2.ConnectionState().DidResume
		c2.Close()
	}
	if err != nil {
		out["second_error"] = err.Error()
	}
	emit(out)
}

// ---------------------------------------------------------------- hs
func modeHS() {
	cfg := tlsConfig() // no session cache: every connection is a full handshake
	req := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *sni + "\r\nConnection: close\r\n\r\n")
	type res struct {
		ok, errs int
		lat      []time.Duration
		lastErr  string
	}
	rs := make([]res, *conc)
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(r *res) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				c, err := dial(cfg)
				var body []byte
				if err == nil {
					if _, err = c.Write(req); err == nil {
						body, err = io.ReadAll(c)
					}
					c.Close()
				}
				if err == nil && !bytes.HasPrefix(body, []byte("HTTP/1.1 200")) {
					err = fmt.Errorf("bad response: %.40q", body)
				}
				if err != nil {
					r.errs++
					r.lastErr = err.Error()
					time.Sleep(time.Millisecond)
					continue
				}
				r.ok++
				r.lat = append(r.lat, time.Since(t0))
			}
		}(&rs[w])
	}
	wg.Wait()
	wall := time.Since(start).Seconds()
	ok, errs, lastErr := 0, 0, ""
	var lat []time.Duration
	for _, r := range rs {
		ok, errs = ok+r.ok, errs+r.errs
		lat = append(lat, r.lat...)
		if r.lastErr != "" {
			lastErr = r.lastErr
		}
	}
	emit(map[string]interface{}{"mode": "hs", "c": *conc, "ok": ok, "errors": errs, "wall_s": wall,
		"rate": float64(ok) / wall, "p50_ms": pct(lat, .5), "p99_ms": pct(lat, .99), "last_error": lastErr})
}

// ---------------------------------------------------------------- ws
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsOpen(cfg *tls.Config) (*tls.Conn, *bufio.Reader, error) {
	c, err := dial(cfg)
	if err != nil {
		return nil, nil, err
	}
	raw := make([]byte, 16)
	rand.Read(raw)
	key := base64.StdEncoding.EncodeToString(raw)
	req := "GET " + *path + " HTTP/1.1\r\nHost: " + *sni + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nOrigin: https://" + *sni + "\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	h := sha1.Sum([]byte(key + wsGUID))
	want := base64.StdEncoding.EncodeToString(h[:])
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != want {
		c.Close()
		return nil, nil, fmt.Errorf("upgrade refused: status %d, accept %q", resp.StatusCode,
			resp.Header.Get("Sec-WebSocket-Accept"))
	}
	return c, br, nil
}

// wsFrame builds one masked binary frame carrying payload.
func wsFrame(payload []byte) []byte {
	var f []byte
	n := len(payload)
	switch {
	case n < 126:
		f = []byte{0x82, 0x80 | byte(n)}
	case n < 65536:
		f = []byte{0x82, 0x80 | 126, byte(n >> 8), byte(n)}
	default:
		f = make([]byte, 10)
		f[0], f[1] = 0x82, 0x80|127
		binary.BigEndian.PutUint64(f[2:], uint64(n))
	}
	mask := make([]byte, 4)
	rand.Read(mask)
	f = append(f, mask...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// wsRead reads one unmasked server frame and returns its payload.
func wsRead(br *bufio.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0]&0x0f == 0x8 {
		return nil, errors.New("server sent close frame")
	}
	n := uint64(hdr[1] & 0x7f)
	if n == 126 {
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	} else if n == 127 {
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if hdr[1]&0x80 != 0 {
		return nil, errors.New("server frame is masked")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(br, p)
	return p, err
}

func modeWS() {
	cfg := tlsConfig()
	payload := make([]byte, *size)
	rand.Read(payload)
	frame := wsFrame(payload)
	type res struct {
		ok, errs int
		lat      []time.Duration
		lastErr  string
	}
	rs := make([]res, *conc)
	var wg, ready sync.WaitGroup
	gate := make(chan struct{})
	var start time.Time
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		ready.Add(1)
		go func(r *res) {
			defer wg.Done()
			c, br, err := wsOpen(cfg)
			ready.Done()
			<-gate
			if err != nil {
				r.errs++
				r.lastErr = err.Error()
				return
			}
			defer c.Close()
			deadline := start.Add(*dur)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				c.SetDeadline(t0.Add(*timeout))
				if _, err = c.Write(frame); err == nil {
					var got []byte
					if got, err = wsRead(br); err == nil && !bytes.Equal(got, payload) {
						err = fmt.Errorf("echo differs (%d bytes, want %d)", len(got), len(payload))
					}
				}
				if err != nil {
					r.errs++
					r.lastErr = err.Error()
					return
				}
				r.ok++
				r.lat = append(r.lat, time.Since(t0))
			}
			c.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}) // close 1000, zero mask
		}(&rs[w])
	}
	ready.Wait()
	start = time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start).Seconds()
	ok, errs, lastErr := 0, 0, ""
	var lat []time.Duration
	for _, r := range rs {
		ok, errs = ok+r.ok, errs+r.errs
		lat = append(lat, r.lat...)
		if r.lastErr != "" {
			lastErr = r.lastErr
		}
	}
	emit(map[string]interface{}{"mode": "ws", "c": *conc, "size": *size, "ok": ok, "errors": errs,
		"wall_s": wall, "rate": float64(ok) / wall, "p50_ms": pct(lat, .5), "p99_ms": pct(lat, .99),
		"last_error": lastErr})
}

// ---------------------------------------------------------------- get / put
func modeTransfer(upload bool) {
	cfg := tlsConfig()
	var rates []float64
	var total int64
	lastErr := ""
	start := time.Now()
	chunk := make([]byte, 256<<10)
	rand.Read(chunk)
	for i := 0; i < *count && time.Since(start) < *dur; i++ {
		c, err := dial(cfg)
		if err != nil {
			lastErr = err.Error()
			continue
		}
		c.SetDeadline(time.Now().Add(*dur))
		br := bufio.NewReaderSize(c, 256<<10)
		t0 := time.Now()
		var got int64
		if upload {
			head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"+
				"Content-Length: %d\r\n\r\n", *path, *sni, *nBytes)
			werr := make(chan error, 1)
			go func() {
				if _, err := c.Write([]byte(head)); err != nil {
					werr <- err
					return
				}
				for left := *nBytes; left > 0; {
					n := int64(len(chunk))
					if left < n {
						n = left
					}
					if _, err := c.Write(chunk[:n]); err != nil {
						werr <- err
						return
					}
					left -= n
				}
				werr <- nil
			}()
			var resp *http.Response
			resp, err = http.ReadResponse(br, nil)
			if err == nil {
				var body []byte
				body, err = io.ReadAll(resp.Body)
				if err == nil {
					got, _ = strconv.ParseInt(strings.TrimSpace(string(body)), 10, 64)
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
			}
			if e := <-werr; err == nil && e != nil {
				err = e
			}
		} else {
			var resp *http.Response
			req := fmt.Sprintf("GET %s?bytes=%d HTTP/1.1\r\nHost: %s\r\n\r\n", *path, *nBytes, *sni)
			if _, err = c.Write([]byte(req)); err == nil {
				resp, err = http.ReadResponse(br, nil)
			}
			if err == nil {
				got, err = io.Copy(io.Discard, resp.Body)
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		}
		el := time.Since(t0).Seconds()
		c.Close()
		if err == nil && got != *nBytes {
			err = fmt.Errorf("transferred %d bytes, want %d", got, *nBytes)
		}
		if err != nil {
			lastErr = err.Error()
			continue
		}
		total += got
		rates = append(rates, float64(got)/1e6/el)
	}
	sort.Float64s(rates)
	med := 0.0
	if len(rates) > 0 {
		med = rates[len(rates)/2]
	}
	mode := "get"
	if upload {
		mode = "put"
	}
	emit(map[string]interface{}{"mode": mode, "ok": len(rates), "errors": *count - len(rates), "bytes": total,
		"wall_s": time.Since(start).Seconds(), "mb_per_s": med, "last_error": lastErr})
}

// ---------------------------------------------------------------- idle
func modeIdle() {
	cfg := tlsConfig()
	var mu sync.Mutex
	var conns []*tls.Conn
	failed, lastErr := 0, ""
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	for i := 0; i < *count; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial(cfg)
			if err == nil {
				var resp *http.Response
				resp, _, err = get(c, bufio.NewReader(c), *path, true)
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				if err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				lastErr = err.Error()
				return
			}
			c.SetDeadline(time.Time{})
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "READY %d %d\n", len(conns), failed)
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(*dur):
	}
	for _, c := range conns {
		c.Close()
	}
	emit(map[string]interface{}{"mode": "idle", "ok": len(conns), "errors": failed, "last_error": lastErr})
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: cgload check|hs|ws|get|put|idle [flags]")
	}
	mode := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	switch mode {
	case "check":
		modeCheck()
	case "hs":
		modeHS()
	case "ws":
		modeWS()
	case "get":
		modeTransfer(false)
	case "put":
		modeTransfer(true)
	case "idle":
		modeIdle()
	default:
		fail("unknown mode %q", mode)
	}
}
