package buffer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Update writes and deletes several keys in one commit; ForEach reads them
// back in key order.
func TestKVUpdateAndForEach(t *testing.T) {
	q, err := Open(Config{Path: filepath.Join(t.TempDir(), "q.db"), MaxBytes: 1 << 20, MaxAge: time.Hour, Consumers: []string{"s"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	kv := q.KV("ns")
	ctx := context.Background()
	if err := kv.Put(ctx, "gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	st, _ := q.Stats()
	if err := kv.Update(ctx, map[string][]byte{"a": []byte("1"), "b": []byte("2"), "gone": nil, "never": nil}); err != nil {
		t.Fatal(err)
	}
	if st2, _ := q.Stats(); st2.Commits != st.Commits+1 {
		t.Fatalf("commits %d → %d, want one", st.Commits, st2.Commits)
	}
	var got []string
	if err := kv.ForEach(func(k string, v []byte) error { got = append(got, k+"="+string(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" {
		t.Fatalf("ForEach = %v", got)
	}
	if v, _ := kv.Get("gone"); v != nil {
		t.Fatalf("deleted key still holds %q", v)
	}
	if err := q.KV("empty").ForEach(func(string, []byte) error { t.Fatal("called"); return nil }); err != nil {
		t.Fatal(err)
	}
}
