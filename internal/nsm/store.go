package nsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The directory:
//
//	state          the state number, in decimal, and a newline
//	peers/<id>     one peer: <id> is a hash of its Key; the contents are
//	                 ovlnfs-nsm-peer 1
//	                 addr <address>
//	                 server <address>
//	                 name <Go-quoted caller name>
//
// Every file is written as <name>.tmp, synced, renamed over <name>, and the directory
// synced: a reader sees the old file or the new one, never a part. A leftover .tmp is a
// write that did not finish, and is removed on load.

const (
	stateFile  = "state"
	peersDir   = "peers"
	peerHeader = "ovlnfs-nsm-peer 1"
	tmpSuffix  = ".tmp"
	// maxPeerFile bounds what is read of a peer file: a caller name of 1024 bytes, quoted.
	maxPeerFile = 8 << 10
)

func (m *Monitor) peersPath() string { return filepath.Join(m.cfg.Dir, peersDir) }

func peerID(p Peer) string {
	sum := sha256.Sum256([]byte(p.Key()))
	return hex.EncodeToString(sum[:16])
}

// load creates the directory if need be and reads the state number and the peers.
func (m *Monitor) load() (int32, []Peer, error) {
	if err := os.MkdirAll(m.peersPath(), 0o700); err != nil {
		return 0, nil, fmt.Errorf("nsm: %w", err)
	}
	var state int32
	b, err := os.ReadFile(filepath.Join(m.cfg.Dir, stateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return 0, nil, fmt.Errorf("nsm: %w", err)
	default:
		n, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
		if perr != nil || n < 0 {
			return 0, nil, fmt.Errorf("nsm: %s holds no state number: %q", filepath.Join(m.cfg.Dir, stateFile), b)
		}
		state = int32(n)
	}
	entries, err := os.ReadDir(m.peersPath())
	if err != nil {
		return 0, nil, fmt.Errorf("nsm: %w", err)
	}
	var peers []Peer
	for _, e := range entries {
		path := filepath.Join(m.peersPath(), e.Name())
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			_ = os.Remove(path)
			continue
		}
		p, err := readPeer(path)
		if err != nil || peerID(p) != e.Name() {
			m.logger.Warn("ignoring a peer file that does not parse", "file", path, "err", err)
			continue
		}
		if len(peers) >= m.cfg.MaxPeers {
			m.logger.Warn("more peer files than the bound on peers; the rest are not notified", "dir", m.peersPath(), "max", m.cfg.MaxPeers)
			break
		}
		peers = append(peers, p)
	}
	_ = os.Remove(filepath.Join(m.cfg.Dir, stateFile+tmpSuffix))
	return state, peers, nil
}

func readPeer(path string) (Peer, error) {
	f, err := os.Open(path)
	if err != nil {
		return Peer{}, err
	}
	defer f.Close()
	b := make([]byte, maxPeerFile+1)
	n, _ := f.Read(b)
	if n > maxPeerFile {
		return Peer{}, errors.New("too large")
	}
	return parsePeer(b[:n])
}

func formatPeer(p Peer) []byte {
	return fmt.Appendf(nil, "%s\naddr %s\nserver %s\nname %s\n", peerHeader, p.Addr, p.Server, strconv.Quote(p.Name))
}

func parsePeer(b []byte) (Peer, error) {
	var p Peer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, maxPeerFile), maxPeerFile)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 4 || lines[0] != peerHeader {
		return p, errors.New("not a peer record")
	}
	field := func(line, key string) (string, error) {
		v, ok := strings.CutPrefix(line, key+" ")
		if !ok {
			return "", fmt.Errorf("no %s line", key)
		}
		return v, nil
	}
	var err error
	var v string
	if v, err = field(lines[1], "addr"); err != nil {
		return p, err
	}
	if p.Addr, err = netip.ParseAddr(v); err != nil {
		return p, err
	}
	if v, err = field(lines[2], "server"); err != nil {
		return p, err
	}
	if p.Server, err = netip.ParseAddr(v); err != nil {
		return p, err
	}
	if v, err = field(lines[3], "name"); err != nil {
		return p, err
	}
	if p.Name, err = strconv.Unquote(v); err != nil || len(p.Name) > MaxName {
		return p, errors.New("bad name")
	}
	return p, nil
}

func (m *Monitor) writePeer(p Peer) error {
	return writeDurable(m.peersPath(), peerID(p), formatPeer(p))
}

func (m *Monitor) removePeer(p Peer) error {
	err := os.Remove(filepath.Join(m.peersPath(), peerID(p)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Not synced: a removal lost in a crash only means one notice too many.
	return err
}

func (m *Monitor) writeState(state int32) error {
	return writeDurable(m.cfg.Dir, stateFile, fmt.Appendf(nil, "%d\n", state))
}

// writeDurable replaces dir/name with data: a temporary file, synced, renamed into
// place, the directory synced.
func writeDurable(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("nsm: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("nsm: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("nsm: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("nsm: %w", err)
	}
	return nil
}
