package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// leanConsumer is a minimal MQTT 3.1.1 subscriber for the replay figure:
// buffered reads and one write for all the PUBACKs of what one read
// brought, so that the figure shows what the gateway delivers rather than
// what a consumer spending several syscalls per message can take
// (mosquitto_sub makes nine per message; paho reads unbuffered).
type leanConsumer struct {
	conn net.Conn
	got  atomic.Uint64
}

func startLean(addr, clientID, filter string) (*leanConsumer, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	var pk []byte
	// CONNECT: protocol MQTT level 4, clean session, keep-alive 60 s.
	vh := append(mqttString("MQTT"), 4, 0x02, 0, 60)
	pk = mqttPacket(pk, 0x10, append(vh, mqttString(clientID)...))
	// SUBSCRIBE packet id 1, filter at QoS 1.
	pk = mqttPacket(pk, 0x82, append(append([]byte{0, 1}, mqttString(filter)...), 1))
	if _, err := conn.Write(pk); err != nil {
		conn.Close()
		return nil, err
	}
	c := &leanConsumer{conn: conn}
	go c.read() // ends with an error when the connection closes
	return c, nil
}

func (c *leanConsumer) read() error {
	r := bufio.NewReaderSize(c.conn, 256<<10)
	var acks []byte
	body := make([]byte, 0, 4096)
	for {
		if r.Buffered() == 0 && len(acks) > 0 {
			if _, err := c.conn.Write(acks); err != nil {
				return err
			}
			acks = acks[:0]
		}
		h, err := r.ReadByte()
		if err != nil {
			return err
		}
		n, mult := 0, 1
		for i := 0; ; i++ {
			b, err := r.ReadByte()
			if err != nil {
				return err
			}
			n += int(b&0x7f) * mult
			mult *= 128
			if b&0x80 == 0 {
				break
			}
			if i == 3 {
				return errors.New("malformed remaining length")
			}
		}
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		switch h >> 4 {
		case 2: // CONNACK
			if n < 2 || body[1] != 0 {
				return fmt.Errorf("connect refused: %v", body)
			}
		case 3: // PUBLISH
			qos := (h >> 1) & 3
			if qos > 0 {
				tl := int(binary.BigEndian.Uint16(body))
				id := body[2+tl : 4+tl]
				ack := byte(0x40) // PUBACK
				if qos == 2 {
					ack = 0x50 // PUBREC; the broker then sends PUBREL
				}
				acks = append(acks, ack, 2, id[0], id[1])
			}
			c.got.Add(1)
		case 6: // PUBREL → PUBCOMP
			acks = append(acks, 0x70, 2, body[0], body[1])
		}
	}
}

func (c *leanConsumer) stop() { c.conn.Close() }

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func mqttPacket(dst []byte, header byte, body []byte) []byte {
	dst = append(dst, header)
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			break
		}
	}
	return append(dst, body...)
}
