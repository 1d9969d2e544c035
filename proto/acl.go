package proto

// IsChild reports whether p is one of the processes the parent starts.
func (p Proc) IsChild() bool { return p >= ProcSMTP && p <= ProcControl }

// Accepts reports whether receiver accepts messages of type t from
// sender. Anything else is fatal for the receiver on an internal channel,
// as in OpenSMTPD ("unexpected imsg"). Each type has exactly one
// direction.
func Accepts(sender, receiver Proc, t Type) bool {
	switch t {
	case TypeSetupPeer, TypeSetupDone:
		return sender == ProcParent && receiver.IsChild()
	case TypeSetupListener:
		return sender == ProcParent && receiver == ProcSMTP
	case TypeSetupControl:
		return sender == ProcParent && receiver == ProcControl
	case TypeSetupReady:
		return sender.IsChild() && receiver == ProcParent
	case TypeStatUpdate:
		return (sender == ProcParent || sender.IsChild()) && sender != ProcControl && receiver == ProcControl
	case TypeControlShowStats:
		return sender == ProcClient && receiver == ProcControl
	case TypeControlStats, TypeControlError:
		return sender == ProcControl && receiver == ProcClient
	}
	return false
}
