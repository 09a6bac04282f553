# bash completion for negotiator-host and negotiator-guest (installed under both names).
# Options come from the program's own --help, so they never drift from it; guest names
# from `negotiator-host -g`; after -e, the first word from the commands the other side lists
# (-c GUEST on the host, -l in the guest).  Each lookup is bounded by -t 2.

# prints the long and short options PROGRAM --help lists
_negotiator_options()
{
	"$1" --help 2>/dev/null | sed -n 's/^ *\(-[a-zA-Z]\)\{0,1\},\{0,1\} *\(--[a-z-]*\).*/\1 \2/p'
}

# prints the value of OPTION (--channel-directory, ...) if the command line sets it
_negotiator_value()
{
	local i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		"$1"=*) echo "${COMP_WORDS[i]#*=}"; return ;;
		"$1") echo "${COMP_WORDS[i + 1]}"; return ;;
		esac
	done
}

_negotiator()
{
	local prog=$1 cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	local name=${1##*/} dir guest i
	local look=(-t 2)
	dir=$(_negotiator_value --channel-directory)
	[ -n "$dir" ] && look+=(--channel-directory "$dir")
	case $prev in
	--input|--commands-directory|--channel-directory|--socket|--character-device|-c)
		if [ "$prev" != -c ] || [ "$name" = negotiator-guest ]; then
			COMPREPLY=($(compgen -f -- "$cur"))
			return
		fi ;;
	-t|--timeout|--max-frame|--parallel)
		return ;;
	-e|--execute)
		# the first word of the command: what the other side offers
		if [ "$name" = negotiator-host ]; then
			guest=
			for ((i = 1; i < COMP_CWORD; i++)); do
				case ${COMP_WORDS[i - 1]} in -e|--execute|-t|--timeout|--input|--max-frame|--parallel|--channel-directory|--commands-directory|--socket) continue ;; esac
				case ${COMP_WORDS[i]} in
				--all) guest= ; break ;;
				-*) ;;
				# a pattern or a second guest: their commands may differ, so offer none
				*[*?[]*) guest= ; break ;;
				*) [ -z "$guest" ] || { guest= ; break; }; guest=${COMP_WORDS[i]} ;;
				esac
			done
			[ -n "$guest" ] && COMPREPLY=($(compgen -W "$("$prog" "${look[@]}" -c "$guest" 2>/dev/null)" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$("$prog" -t 2 -l 2>/dev/null)" -- "$cur"))
		fi
		return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_negotiator_options "$prog")" -- "$cur"))
	elif [ "$name" = negotiator-host ]; then
		COMPREPLY=($(compgen -W "$("$prog" "${look[@]}" -g 2>/dev/null)" -- "$cur"))
	fi
}

complete -F _negotiator negotiator-host negotiator-guest
