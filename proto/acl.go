package proto

// IsChild reports whether p is one of the processes the parent starts.
func (p Proc) IsChild() bool { return p >= ProcSMTP && p <= ProcControl }

// Accepts reports whether receiver accepts messages of type t from
// sender. Anything else is fatal for the receiver on an internal channel,
// as in OpenSMTPD ("unexpected imsg"). Each type has one direction,
// except ControlError, which control also relays from smtp.
func Accepts(sender, receiver Proc, t Type) bool {
	switch t {
	case TypeSetupPeer:
		return sender == ProcParent && receiver.IsChild()
	case TypeSetupDone:
		return sender == ProcParent && (receiver.IsChild() || receiver == ProcMDA)
	case TypeSetupListener:
		return sender == ProcParent && (receiver == ProcSMTP || receiver == ProcControl)
	case TypeSetupControl:
		return sender == ProcParent && receiver == ProcControl
	case TypeSetupReady:
		return (sender.IsChild() || sender == ProcMDA) && receiver == ProcParent
	case TypeStatUpdate:
		return (sender == ProcParent || sender.IsChild()) && sender != ProcControl && receiver == ProcControl
	case TypeControlShowStats, TypeControlShowMTA, TypeControlQueue, TypeControlUpdateTable, TypeControlPauseSMTP:
		return sender == ProcClient && receiver == ProcControl
	case TypeControlStats, TypeControlText:
		return sender == ProcControl && receiver == ProcClient
	case TypeControlError:
		// smtp answers ControlSMTPSession with one when it cannot
		return sender == ProcControl && receiver == ProcClient || sender == ProcSMTP && receiver == ProcControl
	case TypeControlMTAQuery:
		return sender == ProcControl && receiver == ProcMTA
	case TypeMTAObjects:
		return sender == ProcMTA && receiver == ProcControl
	case TypeControlQueueForward:
		return sender == ProcControl && receiver == ProcQueue
	case TypeQueueLines:
		return sender == ProcQueue && receiver == ProcControl
	case TypeControlSMTPPause:
		return sender == ProcControl && receiver == ProcSMTP
	case TypeControlTableReload:
		return sender == ProcControl && receiver == ProcLookup
	case TypeLookupTableReloaded:
		return sender == ProcLookup && receiver == ProcControl
	case TypeSMTPAuthQuery:
		return sender == ProcSMTP && receiver == ProcLookup
	case TypeLookupAuthResult:
		return sender == ProcLookup && receiver == ProcSMTP
	case TypeControlEnqueue, TypeControlLog:
		return sender == ProcClient && receiver == ProcControl
	case TypeControlFile:
		return sender == ProcControl && receiver == ProcClient
	case TypeControlSMTPSession:
		return sender == ProcControl && receiver == ProcSMTP
	case TypeSMTPSessionFile:
		return sender == ProcSMTP && receiver == ProcControl
	case TypeControlLogLevel:
		return sender == ProcControl && receiver.IsChild() && receiver != ProcControl
	case TypeQueueMessageFile:
		return sender == ProcQueue && receiver == ProcControl
	case TypeSMTPFilterQuery:
		return sender == ProcSMTP && receiver == ProcMFA
	case TypeMFAFilterVerdict:
		return sender == ProcMFA && receiver == ProcSMTP
	case TypeSMTPExpandRcpt:
		return sender == ProcSMTP && receiver == ProcLookup
	case TypeLookupExpandResult:
		return sender == ProcLookup && (receiver == ProcSMTP || receiver == ProcQueue)
	case TypeLookupForwardOpen:
		return sender == ProcLookup && receiver == ProcParent
	case TypeParentForwardFile, TypeParentForwardNone, TypeParentTablesReload:
		return sender == ProcParent && receiver == ProcLookup
	case TypeQueueTransfer:
		return sender == ProcQueue && receiver == ProcMTA
	case TypeMTADeliveryResult:
		return sender == ProcMTA && receiver == ProcQueue
	case TypeMTAResolveMX, TypeMTAResolvePTR:
		return sender == ProcMTA && receiver == ProcLookup
	case TypeLookupMXResult, TypeLookupPTRResult:
		return sender == ProcLookup && receiver == ProcMTA
	case TypeQueueExpandRcpt:
		return sender == ProcQueue && receiver == ProcLookup
	case TypeSMTPMessageCreate, TypeSMTPEnvelopeSubmit, TypeSMTPMessageCommit, TypeSMTPMessageRollback:
		return sender == ProcSMTP && receiver == ProcQueue
	case TypeQueueMessageCreated, TypeQueueMessageCommitted, TypeQueueFailure:
		return sender == ProcQueue && receiver == ProcSMTP
	case TypeQueueDeliverLocal:
		return sender == ProcQueue && receiver == ProcParent
	case TypeParentDeliveryResult:
		return sender == ProcParent && receiver == ProcQueue
	case TypeParentMDADeliver:
		return sender == ProcParent && receiver == ProcMDA
	case TypeMDADeliveryResult:
		return sender == ProcMDA && receiver == ProcParent
	}
	return false
}
