package proto

import "fmt"

// procSet is a set of processes, one bit per Proc.
type procSet uint32

func procs(ps ...Proc) procSet {
	var s procSet
	for _, p := range ps {
		s |= 1 << p
	}
	return s
}

func (s procSet) has(p Proc) bool { return p < 32 && s&(1<<p) != 0 }

// children are the processes the parent starts; others are the
// children but control, which receive its log settings.
var (
	children = procs(ProcSMTP, ProcMFA, ProcQueue, ProcMTA, ProcLookup, ProcControl)
	others   = procs(ProcSMTP, ProcMFA, ProcQueue, ProcMTA, ProcLookup)
)

// route is one direction a message type may travel: from any process
// of from to any process of to.
type route struct{ from, to procSet }

// spec is all the registry knows of one message type.
type spec struct {
	name   string
	new    func() Message
	routes []route
}

// one is the common case: a type with a single direction.
func one(from, to procSet) []route { return []route{{from, to}} }

// registry describes every message type: its name, how to make an
// empty one, and who may send it to whom. A new type is one entry here
// and its struct. Each type has one direction (OpenSMTPD's rule, so a
// confused or compromised process cannot speak for another), except
// ControlError, which control also relays from smtp.
var registry = [...]spec{
	TypeSetupPeer:     {"SetupPeer", func() Message { return &SetupPeer{} }, one(procs(ProcParent), children)},
	TypeSetupListener: {"SetupListener", func() Message { return &SetupListener{} }, one(procs(ProcParent), procs(ProcSMTP, ProcControl))},
	TypeSetupControl:  {"SetupControl", func() Message { return &SetupControl{} }, one(procs(ProcParent), procs(ProcControl))},
	TypeSetupDone:     {"SetupDone", func() Message { return &SetupDone{} }, one(procs(ProcParent), children|procs(ProcMDA))},
	TypeSetupReady:    {"SetupReady", func() Message { return &SetupReady{} }, one(children|procs(ProcMDA), procs(ProcParent))},
	TypeStatUpdate:    {"StatUpdate", func() Message { return &StatUpdate{} }, one(others|procs(ProcParent), procs(ProcControl))},

	TypeControlShowStats: {"ControlShowStats", func() Message { return &ControlShowStats{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlStats:     {"ControlStats", func() Message { return &ControlStats{} }, one(procs(ProcControl), procs(ProcClient))},
	TypeControlError: {"ControlError", func() Message { return &ControlError{} }, []route{
		{procs(ProcControl), procs(ProcClient)},
		// smtp answers ControlSMTPSession with one when it cannot
		{procs(ProcSMTP), procs(ProcControl)},
	}},

	TypeSMTPFilterQuery:       {"SMTPFilterQuery", func() Message { return &SMTPFilterQuery{} }, one(procs(ProcSMTP), procs(ProcMFA))},
	TypeMFAFilterVerdict:      {"MFAFilterVerdict", func() Message { return &MFAFilterVerdict{} }, one(procs(ProcMFA), procs(ProcSMTP))},
	TypeSMTPExpandRcpt:        {"SMTPExpandRcpt", func() Message { return &SMTPExpandRcpt{} }, one(procs(ProcSMTP), procs(ProcLookup))},
	TypeLookupExpandResult:    {"LookupExpandResult", func() Message { return &LookupExpandResult{} }, one(procs(ProcLookup), procs(ProcSMTP, ProcQueue))},
	TypeSMTPMessageCreate:     {"SMTPMessageCreate", func() Message { return &SMTPMessageCreate{} }, one(procs(ProcSMTP), procs(ProcQueue))},
	TypeQueueMessageCreated:   {"QueueMessageCreated", func() Message { return &QueueMessageCreated{} }, one(procs(ProcQueue), procs(ProcSMTP))},
	TypeSMTPEnvelopeSubmit:    {"SMTPEnvelopeSubmit", func() Message { return &SMTPEnvelopeSubmit{} }, one(procs(ProcSMTP), procs(ProcQueue))},
	TypeSMTPMessageCommit:     {"SMTPMessageCommit", func() Message { return &SMTPMessageCommit{} }, one(procs(ProcSMTP), procs(ProcQueue))},
	TypeQueueMessageCommitted: {"QueueMessageCommitted", func() Message { return &QueueMessageCommitted{} }, one(procs(ProcQueue), procs(ProcSMTP))},
	TypeSMTPMessageRollback:   {"SMTPMessageRollback", func() Message { return &SMTPMessageRollback{} }, one(procs(ProcSMTP), procs(ProcQueue))},
	TypeQueueFailure:          {"QueueFailure", func() Message { return &QueueFailure{} }, one(procs(ProcQueue), procs(ProcSMTP))},
	TypeQueueDeliverLocal:     {"QueueDeliverLocal", func() Message { return &QueueDeliverLocal{} }, one(procs(ProcQueue), procs(ProcParent))},
	TypeParentDeliveryResult:  {"ParentDeliveryResult", func() Message { return &ParentDeliveryResult{} }, one(procs(ProcParent), procs(ProcQueue))},
	TypeParentMDADeliver:      {"ParentMDADeliver", func() Message { return &ParentMDADeliver{} }, one(procs(ProcParent), procs(ProcMDA))},
	TypeMDADeliveryResult:     {"MDADeliveryResult", func() Message { return &MDADeliveryResult{} }, one(procs(ProcMDA), procs(ProcParent))},
	TypeQueueExpandRcpt:       {"QueueExpandRcpt", func() Message { return &QueueExpandRcpt{} }, one(procs(ProcQueue), procs(ProcLookup))},
	TypeLookupForwardOpen:     {"LookupForwardOpen", func() Message { return &LookupForwardOpen{} }, one(procs(ProcLookup), procs(ProcParent))},
	TypeParentForwardFile:     {"ParentForwardFile", func() Message { return &ParentForwardFile{} }, one(procs(ProcParent), procs(ProcLookup))},
	TypeParentForwardNone:     {"ParentForwardNone", func() Message { return &ParentForwardNone{} }, one(procs(ProcParent), procs(ProcLookup))},
	TypeParentTablesReload:    {"ParentTablesReload", func() Message { return &ParentTablesReload{} }, one(procs(ProcParent), procs(ProcLookup))},

	TypeQueueTransfer:       {"QueueTransfer", func() Message { return &QueueTransfer{} }, one(procs(ProcQueue), procs(ProcMTA))},
	TypeMTADeliveryResult:   {"MTADeliveryResult", func() Message { return &MTADeliveryResult{} }, one(procs(ProcMTA), procs(ProcQueue))},
	TypeMTAResolveMX:        {"MTAResolveMX", func() Message { return &MTAResolveMX{} }, one(procs(ProcMTA), procs(ProcLookup))},
	TypeLookupMXResult:      {"LookupMXResult", func() Message { return &LookupMXResult{} }, one(procs(ProcLookup), procs(ProcMTA))},
	TypeMTAResolvePTR:       {"MTAResolvePTR", func() Message { return &MTAResolvePTR{} }, one(procs(ProcMTA), procs(ProcLookup))},
	TypeLookupPTRResult:     {"LookupPTRResult", func() Message { return &LookupPTRResult{} }, one(procs(ProcLookup), procs(ProcMTA))},
	TypeControlShowMTA:      {"ControlShowMTA", func() Message { return &ControlShowMTA{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlMTAQuery:     {"ControlMTAQuery", func() Message { return &ControlMTAQuery{} }, one(procs(ProcControl), procs(ProcMTA))},
	TypeMTAObjects:          {"MTAObjects", func() Message { return &MTAObjects{} }, one(procs(ProcMTA), procs(ProcControl))},
	TypeControlText:         {"ControlText", func() Message { return &ControlText{} }, one(procs(ProcControl), procs(ProcClient))},
	TypeControlQueue:        {"ControlQueue", func() Message { return &ControlQueue{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlQueueForward: {"ControlQueueForward", func() Message { return &ControlQueueForward{} }, one(procs(ProcControl), procs(ProcQueue))},
	TypeQueueLines:          {"QueueLines", func() Message { return &QueueLines{} }, one(procs(ProcQueue), procs(ProcControl))},
	TypeControlUpdateTable:  {"ControlUpdateTable", func() Message { return &ControlUpdateTable{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlTableReload:  {"ControlTableReload", func() Message { return &ControlTableReload{} }, one(procs(ProcControl), procs(ProcLookup))},
	TypeLookupTableLines:    {"LookupTableLines", func() Message { return &LookupTableLines{} }, one(procs(ProcLookup), procs(ProcControl))},
	TypeControlPauseSMTP:    {"ControlPauseSMTP", func() Message { return &ControlPauseSMTP{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlSMTPPause:    {"ControlSMTPPause", func() Message { return &ControlSMTPPause{} }, one(procs(ProcControl), procs(ProcSMTP))},
	TypeSMTPAuthQuery:       {"SMTPAuthQuery", func() Message { return &SMTPAuthQuery{} }, one(procs(ProcSMTP), procs(ProcLookup))},
	TypeLookupAuthResult:    {"LookupAuthResult", func() Message { return &LookupAuthResult{} }, one(procs(ProcLookup), procs(ProcSMTP))},
	TypeControlEnqueue:      {"ControlEnqueue", func() Message { return &ControlEnqueue{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlSMTPSession:  {"ControlSMTPSession", func() Message { return &ControlSMTPSession{} }, one(procs(ProcControl), procs(ProcSMTP))},
	TypeSMTPSessionFile:     {"SMTPSessionFile", func() Message { return &SMTPSessionFile{} }, one(procs(ProcSMTP), procs(ProcControl))},
	TypeControlFile:         {"ControlFile", func() Message { return &ControlFile{} }, one(procs(ProcControl), procs(ProcClient))},
	TypeControlLog:          {"ControlLog", func() Message { return &ControlLog{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlLogLevel:     {"ControlLogLevel", func() Message { return &ControlLogLevel{} }, one(procs(ProcControl), others)},
	TypeQueueMessageFile:    {"QueueMessageFile", func() Message { return &QueueMessageFile{} }, one(procs(ProcQueue), procs(ProcControl))},

	TypeMTACredentialsQuery:  {"MTACredentialsQuery", func() Message { return &MTACredentialsQuery{} }, one(procs(ProcMTA), procs(ProcLookup))},
	TypeLookupCredentials:    {"LookupCredentials", func() Message { return &LookupCredentials{} }, one(procs(ProcLookup), procs(ProcMTA))},
	TypeLookupTablesReloaded: {"LookupTablesReloaded", func() Message { return &LookupTablesReloaded{} }, one(procs(ProcLookup), procs(ProcMTA, ProcParent))},
	TypeMFATableQuery:        {"MFATableQuery", func() Message { return &MFATableQuery{} }, one(procs(ProcMFA), procs(ProcLookup))},
	TypeLookupTableResult:    {"LookupTableResult", func() Message { return &LookupTableResult{} }, one(procs(ProcLookup), procs(ProcMFA))},
	TypeParentAccountQuery:   {"ParentAccountQuery", func() Message { return &ParentAccountQuery{} }, one(procs(ProcParent), procs(ProcLookup))},
	TypeLookupAccountResult:  {"LookupAccountResult", func() Message { return &LookupAccountResult{} }, one(procs(ProcLookup), procs(ProcParent))},

	TypeSMTPFilterEvent:     {"SMTPFilterEvent", func() Message { return &SMTPFilterEvent{} }, one(procs(ProcSMTP), procs(ProcMFA))},
	TypeSMTPFilterMessage:   {"SMTPFilterMessage", func() Message { return &SMTPFilterMessage{} }, one(procs(ProcSMTP), procs(ProcMFA))},
	TypeMFAMessageVerdict:   {"MFAMessageVerdict", func() Message { return &MFAMessageVerdict{} }, one(procs(ProcMFA), procs(ProcSMTP))},
	TypeMFAMessageRewritten: {"MFAMessageRewritten", func() Message { return &MFAMessageRewritten{} }, one(procs(ProcMFA), procs(ProcSMTP))},
	TypeParentFilterProcess: {"ParentFilterProcess", func() Message { return &ParentFilterProcess{} }, one(procs(ProcParent), procs(ProcMFA))},
	TypeMFAFilterBroken:     {"MFAFilterBroken", func() Message { return &MFAFilterBroken{} }, one(procs(ProcMFA), procs(ProcParent))},
	TypeParentFilterExited:  {"ParentFilterExited", func() Message { return &ParentFilterExited{} }, one(procs(ProcParent), procs(ProcMFA))},
	TypeControlShowFilters:  {"ControlShowFilters", func() Message { return &ControlShowFilters{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlFiltersQuery: {"ControlFiltersQuery", func() Message { return &ControlFiltersQuery{} }, one(procs(ProcControl), procs(ProcMFA))},
	TypeMFAFilterLines:      {"MFAFilterLines", func() Message { return &MFAFilterLines{} }, one(procs(ProcMFA), procs(ProcControl))},
	TypeQueueOverload:       {"QueueOverload", func() Message { return &QueueOverload{} }, one(procs(ProcQueue), procs(ProcSMTP, ProcControl))},
	TypeMFAMilterConnect:    {"MFAMilterConnect", func() Message { return &MFAMilterConnect{} }, one(procs(ProcMFA), procs(ProcParent))},
	TypeParentMilterSocket:  {"ParentMilterSocket", func() Message { return &ParentMilterSocket{} }, one(procs(ProcParent), procs(ProcMFA))},
	TypeParentMilterRefused: {"ParentMilterRefused", func() Message { return &ParentMilterRefused{} }, one(procs(ProcParent), procs(ProcMFA))},
	TypeControlShowTable:    {"ControlShowTable", func() Message { return &ControlShowTable{} }, one(procs(ProcClient), procs(ProcControl))},
	TypeControlTableLookup:  {"ControlTableLookup", func() Message { return &ControlTableLookup{} }, one(procs(ProcControl), procs(ProcLookup))},
	TypeMTAResolveDNS:       {"MTAResolveDNS", func() Message { return &MTAResolveDNS{} }, one(procs(ProcMTA), procs(ProcLookup))},
	TypeLookupDNSResult:     {"LookupDNSResult", func() Message { return &LookupDNSResult{} }, one(procs(ProcLookup), procs(ProcMTA))},
	TypeMTAReportSubmit:     {"MTAReportSubmit", func() Message { return &MTAReportSubmit{} }, one(procs(ProcMTA), procs(ProcQueue))},
	TypeQueueReportQueued:   {"QueueReportQueued", func() Message { return &QueueReportQueued{} }, one(procs(ProcQueue), procs(ProcMTA))},

	TypeSMTPDomainSchedule:   {"SMTPDomainSchedule", func() Message { return &SMTPDomainSchedule{} }, one(procs(ProcSMTP), procs(ProcQueue))},
	TypeQueueDomainScheduled: {"QueueDomainScheduled", func() Message { return &QueueDomainScheduled{} }, one(procs(ProcQueue), procs(ProcSMTP))},
	TypeQueueDomainFlush:     {"QueueDomainFlush", func() Message { return &QueueDomainFlush{} }, one(procs(ProcQueue), procs(ProcMTA))},

	TypeParentListenerCertificate: {"ParentListenerCertificate", func() Message { return &ParentListenerCertificate{} }, one(procs(ProcParent), procs(ProcSMTP))},
	TypeParentDrain:               {"ParentDrain", func() Message { return &ParentDrain{} }, one(procs(ProcParent), procs(ProcSMTP))},
	TypeSMTPDrained:               {"SMTPDrained", func() Message { return &SMTPDrained{} }, one(procs(ProcSMTP), procs(ProcParent))},
}

// lookupSpec returns the registry entry of t, or false for an unknown type.
func lookupSpec(t Type) (*spec, bool) {
	if t == 0 || int(t) >= len(registry) || registry[t].new == nil {
		return nil, false
	}
	return &registry[t], true
}

func (t Type) String() string {
	if s, ok := lookupSpec(t); ok {
		return s.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// New returns an empty message of type t, or false for an unknown type.
func New(t Type) (Message, bool) {
	s, ok := lookupSpec(t)
	if !ok {
		return nil, false
	}
	return s.new(), true
}

// IsChild reports whether p is one of the processes the parent starts.
func (p Proc) IsChild() bool { return children.has(p) }

// Accepts reports whether receiver accepts messages of type t from
// sender. Anything else is fatal for the receiver on an internal channel,
// as in OpenSMTPD ("unexpected imsg").
func Accepts(sender, receiver Proc, t Type) bool {
	s, ok := lookupSpec(t)
	if !ok {
		return false
	}
	for _, r := range s.routes {
		if r.from.has(sender) && r.to.has(receiver) {
			return true
		}
	}
	return false
}
