package server

import "strconv"

// bdat runs BDAT (RFC 3030 §2). A chunk the engine refuses is still
// read, and dropped, whenever its size could be parsed: otherwise its
// bytes would be taken for commands. After any failure the transaction
// is over, so that chunks pipelined after the failed one get 503 too.
func (c *Conn) bdat(arg string) {
	size, last, ok := parseBDAT(arg)
	if !ok {
		c.protocolError(501, codeBadArgs, "Syntax: BDAT <size> [LAST]")
		return
	}
	var code int
	var enhanced, text string
	switch {
	case c.tx == nil:
		code, enhanced, text = 503, codeInvalidCmd, "Need MAIL before BDAT"
	case c.tx.rcpts == 0:
		code, enhanced, text = 503, codeInvalidCmd, "Need RCPT before BDAT"
	case c.tx.body == nil && size > c.srv.maxMessageBytes(),
		c.tx.body != nil && size > c.tx.body.max-c.tx.body.size:
		// the size comes before the chunk (RFC 3030 §2), so it is
		// checked before the chunk is read; it may be anything up to
		// math.MaxInt64
		code, enhanced, text = 552, codeTooBig, "Message size exceeds fixed maximum message size"
	}
	switch {
	case code == 503 && c.errors >= c.srv.maxErrors():
		// the session ends at this error: no use reading the chunk
		c.protocolError(code, enhanced, text)
		return
	case code != 0 && !c.readChunk(nil, size):
		return
	case code == 503:
		c.protocolError(code, enhanced, text)
		return
	case code == 552:
		c.writeReply(code, enhanced, text)
		c.abort()
		return
	}
	if c.tx.body == nil {
		b, ok := c.startBody()
		if !ok {
			if !c.quit && c.readChunk(nil, size) {
				c.abort()
			}
			return
		}
		c.tx.body = b
	}
	b := c.tx.body
	if !c.readChunk(b, size) {
		return
	}
	switch {
	case last:
		c.endMessage(b)
	case b.fail != nil:
		c.send(b.fail)
		c.abort()
	default:
		c.writeReply(250, codeOK, strconv.FormatInt(size, 10)+" octets received")
	}
}

// readChunk reads n octets of a chunk into b, or drops them if b is
// nil. If the connection fails, the session ends and it returns false.
func (c *Conn) readChunk(b *body, n int64) bool {
	for n > 0 {
		if c.br.Buffered() == 0 {
			if _, err := c.br.Peek(1); err != nil {
				c.endOnError(err)
				c.quit = true
				return false
			}
		}
		p, _ := c.br.Peek(int(min(n, int64(c.br.Buffered()))))
		if b != nil {
			b.feed(p)
		}
		c.br.Discard(len(p))
		n -= int64(len(p))
	}
	return true
}
